"""`load_pretrained_model`: LLaVA-1.5 checkpoints of either layout onto LlavaForConditionalGeneration.

Layouts, told apart by the keys of config.json (never by the folder's name):
- original (`llava-v1.5-7b`): config with `mm_*` keys; weights `model.layers.N.*`,
  `model.mm_projector.{0,2}.*`, `lm_head.*`; CLIP comes from the folder named by
  `mm_vision_tower` (or the `vision_tower` argument). Mapped in memory, no converted copy.
- llava-hf: config with `text_config` and `vision_config`; everything in the folder.
"""

from __future__ import annotations

import json
import os
import warnings

import torch
from transformers import AutoTokenizer, CLIPVisionConfig, LlamaConfig, LlavaConfig

from llava.utils import resolve_device
from llava.model.checkpoint_files import CheckpointError, TensorReader, weight_map
from llava.model.llava_llama import LlavaLlamaForCausalLM

# Keys of an original config.json that describe the Llama language model.
LLAMA_CONFIG_KEYS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling", "vocab_size",
    "bos_token_id", "eos_token_id", "pad_token_id", "attention_bias", "mlp_bias", "head_dim", "initializer_range",
)  # fmt: skip

DTYPES = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float32": torch.float32, "fp32": torch.float32}  # fmt: skip


def resolve_dtype(dtype, device: str) -> torch.dtype:
    """Named dtype; 'auto' or None is float16 on CUDA (as the original) and float32 on the CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.float16 if device.startswith("cuda") else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {sorted(DTYPES)}")
    return DTYPES[dtype]


def resolve_vision_dtype(vision_dtype, dtype: torch.dtype, device: str) -> torch.dtype:
    """CLIP's dtype; 'auto' or None follows the language model's resolved `dtype`.

    >>> resolve_vision_dtype("float32", torch.float16, "cuda")
    torch.float32
    >>> resolve_vision_dtype("auto", torch.bfloat16, "cuda")
    torch.bfloat16
    """
    if vision_dtype in (None, "auto"):
        return dtype
    return resolve_dtype(vision_dtype, device)


def read_json(path: str) -> dict:
    if not os.path.exists(path):
        raise CheckpointError(f"missing file {path}")
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def checkpoint_layout(config: dict) -> str:
    """'original' for LLaVA's own layout, 'hf' for llava-hf, by the config's keys."""
    if "mm_vision_tower" in config or "mm_projector_type" in config:
        return "original"
    if "text_config" in config and "vision_config" in config:
        return "hf"
    raise CheckpointError("config.json is neither an original LLaVA config (mm_* keys) nor a llava-hf config")


def original_to_hf_key(key: str) -> str | None:
    """Target parameter name of an original-layout weight key; None for keys we do not load.

    >>> original_to_hf_key("model.layers.3.self_attn.q_proj.weight")
    'model.language_model.layers.3.self_attn.q_proj.weight'
    >>> original_to_hf_key("model.mm_projector.2.bias")
    'model.multi_modal_projector.linear_2.bias'
    >>> original_to_hf_key("model.vision_tower.vision_tower.vision_model.post_layernorm.bias") is None
    True
    """
    if key.endswith("rotary_emb.inv_freq") or key.startswith("model.vision_tower."):
        return None  # recomputed buffers; CLIP comes from its own folder as in the original
    for prefix in ("model.embed_tokens.", "model.layers.", "model.norm."):
        if key.startswith(prefix):
            return "model.language_model." + key[len("model.") :]
    if key.startswith("lm_head."):
        return key
    for index, name in (("0", "linear_1"), ("2", "linear_2")):
        prefix = f"model.mm_projector.{index}."
        if key.startswith(prefix):
            return f"model.multi_modal_projector.{name}." + key[len(prefix) :]
    raise CheckpointError(f"unexpected weight key {key!r} in an original LLaVA checkpoint")


def clip_source_keys(mapping: dict[str, str]) -> dict[str, str]:
    """Vision-model keys of a CLIP checkpoint, bare (without `vision_model.`) -> source key."""
    keys = {}
    for key in mapping:
        if key.startswith("vision_model."):
            keys[key[len("vision_model.") :]] = key
        elif key.startswith(("embeddings.", "encoder.", "pre_layrnorm.", "post_layernorm.")):
            keys[key] = key
    return keys


def resolve_vision_tower(config: dict, model_path: str, vision_tower: str | None) -> str:
    path = vision_tower or config.get("mm_vision_tower")
    if not path:
        raise CheckpointError(f"{model_path}/config.json has no mm_vision_tower; pass --vision-tower PATH")
    if not os.path.isdir(path):
        relative = os.path.join(model_path, path)
        if os.path.isdir(relative):
            return relative
        raise CheckpointError(
            f"CLIP folder {path!r} (mm_vision_tower of {model_path}/config.json) does not exist here; "
            "pass --vision-tower with a local copy of clip-vit-large-patch14-336"
        )
    return path


def build_llava_config(config: dict, clip_folder: str) -> LlavaConfig:
    """LlavaConfig equivalent to an original config.json and its CLIP folder."""
    for key, expected in (("mm_projector_type", "mlp2x_gelu"), ("mm_use_im_start_end", False)):
        if config.get(key, expected) != expected:
            raise CheckpointError(f"config {key}={config[key]!r} is not supported (LLaVA-1.5 uses {expected!r})")
    clip_json = read_json(os.path.join(clip_folder, "config.json"))
    vision_dict = clip_json.get("vision_config", clip_json)  # a full CLIPConfig or a CLIPVisionConfig
    # The folder's dtype key would otherwise decide CLIP's dtype; the builder sets it explicitly.
    ignored = ("model_type", "architectures", "transformers_version", "torch_dtype", "dtype")
    vision_dict = {k: v for k, v in vision_dict.items() if k not in ignored}
    vision_config = CLIPVisionConfig(**vision_dict)
    if config.get("mm_hidden_size", vision_config.hidden_size) != vision_config.hidden_size:
        raise CheckpointError(
            f"mm_hidden_size {config['mm_hidden_size']} != hidden_size {vision_config.hidden_size} of {clip_folder}"
        )
    text_config = LlamaConfig(**{k: config[k] for k in LLAMA_CONFIG_KEYS if k in config}, tie_word_embeddings=False)
    select_feature = config.get("mm_vision_select_feature", "patch")
    if select_feature not in ("patch", "cls_patch"):
        raise CheckpointError(f"mm_vision_select_feature {select_feature!r} is not supported")
    num_patches = (vision_config.image_size // vision_config.patch_size) ** 2
    llava_config = LlavaConfig(
        vision_config=vision_config.to_dict(),
        text_config=text_config.to_dict(),
        # No image token in an original vocabulary: an id past the end marks "none", so nothing is masked.
        image_token_id=text_config.vocab_size,
        projector_hidden_act="gelu",
        vision_feature_layer=config.get("mm_vision_select_layer", -2),
        vision_feature_select_strategy="default" if select_feature == "patch" else "full",
        image_seq_length=num_patches,
        multimodal_projector_bias=True,
        tie_word_embeddings=False,
    )
    llava_config.image_aspect_ratio = config.get("image_aspect_ratio")
    return llava_config


def allocate_uninitialised(model_class, config, device, dtype: torch.dtype):
    """`model_class(config)` allocated on `device` in `dtype`, its weights left uninitialised
    (they are loaded or filled next): no CPU copy and no random initialisation to pay for."""
    from transformers.initialization import no_init_weights

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with no_init_weights(), torch.device(device):
            return model_class(config)
    finally:
        torch.set_default_dtype(previous)


def empty_model(config: LlavaConfig, device: str, dtype: torch.dtype, attn_implementation: str = "sdpa",
                vision_dtype: torch.dtype | None = None):
    """The model allocated on `device` in `dtype` (CLIP in `vision_dtype`, default `dtype`)
    without random initialisation (weights come next)."""
    # Chosen explicitly: a model built from a config (not from_pretrained) may default to eager.
    config._attn_implementation = attn_implementation
    for sub in (config.text_config, config.vision_config):
        sub._attn_implementation = attn_implementation
    model = allocate_uninitialised(LlavaLlamaForCausalLM, config, device, dtype)
    if vision_dtype is not None:
        # Before the weights are copied in, so float32 CLIP weights keep their precision.
        model.model.vision_tower.to(vision_dtype)
    return model


def load_state(model, plan: dict[str, tuple[TensorReader, str]], context: str) -> None:
    """Copy every planned tensor into the model; missing or misshapen weights are errors."""
    targets = model.state_dict(keep_vars=True)
    missing = sorted(set(targets) - set(plan))
    if missing:
        raise CheckpointError(f"{context}: no weights for {len(missing)} model keys, e.g. {missing[:5]}")
    with torch.no_grad():
        for target_key, (reader, source_key) in plan.items():
            if target_key not in targets:
                raise CheckpointError(f"{reader.mapping[source_key]}: key {source_key!r} maps to unknown {target_key!r}")
            tensor = reader.get(source_key)
            target = targets[target_key]
            if tuple(tensor.shape) != tuple(target.shape):
                raise CheckpointError(
                    f"{reader.mapping[source_key]}: {source_key!r} has shape {tuple(tensor.shape)}, "
                    f"the model expects {tuple(target.shape)} for {target_key}"
                )
            target.copy_(tensor)


def load_original(model_path, model_base, config, device, dtype, vision_dtype, vision_tower, attn_implementation):
    clip_folder = resolve_vision_tower(config, model_path, vision_tower)
    llava_config = build_llava_config(config, clip_folder)
    model = empty_model(llava_config, device, dtype, attn_implementation, vision_dtype)

    plan: dict[str, tuple[TensorReader, str]] = {}
    # With a base, the language model comes from it and the folder's own weights override
    # (e.g. a projector-only `mm_projector.bin`).
    for folder in [f for f in (model_base, model_path) if f]:
        reader = TensorReader(weight_map(folder, extra_files=("mm_projector.bin",)))
        for key in reader.mapping:
            target = original_to_hf_key(key)
            if target is not None:
                plan[target] = (reader, key)

    clip_reader = TensorReader(weight_map(clip_folder))
    tower_keys = set(model.model.vision_tower.state_dict())
    for bare, source in clip_source_keys(clip_reader.mapping).items():
        for candidate in (bare, "vision_model." + bare):
            if candidate in tower_keys:
                plan["model.vision_tower." + candidate] = (clip_reader, source)
    load_state(model, plan, context=f"{model_path} (+ CLIP {clip_folder})")
    return model, clip_folder


def load_hf(model_path, device, dtype, vision_dtype, attn_implementation):
    reader = TensorReader(weight_map(model_path))
    reader.open_all()  # from_pretrained's errors for a truncated file do not name it
    model = LlavaLlamaForCausalLM.from_pretrained(
        model_path, dtype=dtype, attn_implementation=attn_implementation
    ).to(device)
    tower = model.model.vision_tower
    if vision_dtype != dtype:
        # from_pretrained rounded CLIP to `dtype`: read its weights again at the files' precision.
        tower.to(vision_dtype)
        plan = {}
        for key in reader.mapping:
            head, found, bare = key.partition("vision_tower.")
            if found and head in ("", "model."):  # llava-hf's keys and transformers 5's
                plan[bare] = (reader, key)
        load_state(tower, plan, context=f"{model_path} (CLIP)")
    return model


def load_image_processor(folder: str):
    """CLIP processor with the PIL backend: pixel-identical to the original's."""
    try:
        from transformers import CLIPImageProcessorPil
    except ImportError:  # transformers releases without split backends
        from transformers import CLIPImageProcessor as CLIPImageProcessorPil
    if not os.path.exists(os.path.join(folder, "preprocessor_config.json")):
        raise CheckpointError(f"missing file {os.path.join(folder, 'preprocessor_config.json')}")
    return CLIPImageProcessorPil.from_pretrained(folder)


def load_pretrained_model(
    model_path,
    model_base=None,
    model_name=None,
    load_8bit=False,
    load_4bit=False,
    device_map="auto",
    device="cuda",
    use_flash_attn=False,
    *,
    dtype=None,
    vision_tower=None,
    vision_dtype="float32",
    attn_implementation=None,
):
    """Load a LLaVA-1.5 checkpoint; returns (tokenizer, model, image_processor, context_len).

    `dtype` defaults to float16 on CUDA and float32 on the CPU. CLIP's `vision_dtype` defaults to
    float32 whatever its folder's config says: LLaVA's evaluation scripts load with
    device_map="auto", under which the original builder skips its float16 cast of CLIP.
    'auto' (or None) puts CLIP in `dtype`. `model_name` is accepted for compatibility and
    ignored: behaviour never depends on names.
    """
    if load_8bit or load_4bit:
        raise NotImplementedError("8-bit/4-bit loading is not supported by this runtime")
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    vision_dtype = resolve_vision_dtype(vision_dtype, dtype, device)
    attn_implementation = attn_implementation or ("flash_attention_2" if use_flash_attn else "sdpa")
    config = read_json(os.path.join(model_path, "config.json"))
    layout = checkpoint_layout(config)
    if layout == "original":
        model, processor_folder = load_original(model_path, model_base, config, device, dtype, vision_dtype,
                                                vision_tower, attn_implementation)
    else:
        if vision_tower or model_base:
            warnings.warn("vision_tower/model_base are ignored for llava-hf checkpoints, which hold all weights")
        model = load_hf(model_path, device, dtype, vision_dtype, attn_implementation)
        # llava-hf configs carry no aspect-ratio key; LLaVA-1.5 always pads to square.
        model.config.image_aspect_ratio = "pad"
        processor_folder = model_path
    model.eval()
    model.requires_grad_(False)

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    image_processor = load_image_processor(processor_folder)
    context_len = getattr(model.config, "max_sequence_length", 2048)
    return tokenizer, model, image_processor, context_len
