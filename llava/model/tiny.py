"""Tiny LLaVA-1.5-architecture models and their tokenizer, built and saved offline.

Used by the tests (random weights) and by the embedded demo (trained weights). A tiny model
has the real structure (CLIP vision tower, two-layer GELU projector, Llama language model)
at a few thousand parameters per layer, and is saved in either checkpoint layout.
"""

from __future__ import annotations

import json
import os

import torch
from safetensors.torch import save_file

from llava.conversation import conv_templates
from llava.constants import POPE_ANSWER_SUFFIX

# Special tokens at the Llama-2 ids: <unk> 0, <s> 1, </s> 2.
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")


def build_tokenizer(texts, vocab_size: int = 400):
    """A SentencePiece-style BPE tokenizer (metaspace '▁', BOS added) trained on `texts`.

    Saved with `save_pretrained`, it loads offline through AutoTokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    alphabet = sorted(set("".join(texts)) | set("▁\n"))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", add_bos_token=True
    )


def prompt_corpus(questions, answers=("Yes", "No"), conv_mode: str = "vicuna_v1") -> list[str]:
    """Texts a tiny tokenizer must cover: the conversation frame, the questions and the answers."""
    conv = conv_templates[conv_mode]
    texts = [conv.system, " ".join(conv.roles) + ":", POPE_ANSWER_SUFFIX, *answers]
    texts += [q + POPE_ANSWER_SUFFIX for q in questions]
    return texts


def tiny_text_config(vocab_size: int, hidden_size: int = 64, layers: int = 2, heads: int = 4) -> dict:
    """Llama keys of an original LLaVA config.json, at a tiny size."""
    return {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": hidden_size * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "hidden_act": "silu",
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
    }


def tiny_clip_config(hidden_size: int = 32, layers: int = 3, image_size: int = 336, patch_size: int = 14) -> dict:
    """A CLIPVisionConfig dict; 336/14 keeps the real 24x24 patch grid."""
    return {
        "model_type": "clip_vision_model",
        "hidden_size": hidden_size,
        "intermediate_size": hidden_size * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": 2,
        "image_size": image_size,
        "patch_size": patch_size,
        "projection_dim": hidden_size,
    }


CLIP_PREPROCESSOR = {
    "crop_size": {"height": 336, "width": 336},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 336},
    "image_processor_type": "CLIPImageProcessor",
}


def original_config(text_config: dict, clip_folder: str, clip_hidden: int) -> dict:
    """config.json of the original layout, with the keys of llava-v1.5-7b."""
    return {
        "architectures": ["LlavaLlamaForCausalLM"],
        "model_type": "llava",
        **text_config,
        "tie_word_embeddings": False,
        "mm_vision_tower": clip_folder,
        "mm_projector_type": "mlp2x_gelu",
        "mm_hidden_size": clip_hidden,
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "image_aspect_ratio": "pad",
        "freeze_mm_mlp_adapter": False,
        "tune_mm_mlp_adapter": False,
    }


def random_tiny_llava(text_config: dict, clip_config: dict, seed: int = 0):
    """A randomly initialised LlavaLlamaForCausalLM of the given tiny shapes (fp32, CPU)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    from llava.model.llava_llama import LlavaLlamaForCausalLM

    clip = {k: v for k, v in clip_config.items() if k != "model_type"}
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**clip).to_dict(),
        text_config=LlamaConfig(**text_config, tie_word_embeddings=False).to_dict(),
        image_token_id=text_config["vocab_size"],
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=(clip["image_size"] // clip["patch_size"]) ** 2,
        tie_word_embeddings=False,
    )
    config.image_aspect_ratio = "pad"
    torch.manual_seed(seed)
    model = LlavaLlamaForCausalLM(config)
    # Wider than the default init so that random tiny models have peaked, varied outputs.
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    return model.eval()


def original_layout_state_dict(model) -> tuple[dict, dict]:
    """(LLaVA weights with original keys, CLIP weights with `vision_model.` keys) of a model."""
    llava, clip = {}, {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().clone().contiguous()
        if key.startswith("model.language_model."):
            llava["model." + key[len("model.language_model.") :]] = tensor
        elif key.startswith("model.multi_modal_projector.linear_1."):
            llava["model.mm_projector.0." + key.rsplit(".", 1)[1]] = tensor
        elif key.startswith("model.multi_modal_projector.linear_2."):
            llava["model.mm_projector.2." + key.rsplit(".", 1)[1]] = tensor
        elif key.startswith("lm_head."):
            llava[key] = tensor
        elif key.startswith("model.vision_tower."):
            bare = key[len("model.vision_tower.") :]
            bare = bare[len("vision_model.") :] if bare.startswith("vision_model.") else bare
            clip["vision_model." + bare] = tensor
        else:
            raise KeyError(f"unmapped key {key}")
    return llava, clip


def save_original_layout(model, tokenizer, text_config: dict, clip_config: dict, model_folder: str,
                         clip_folder: str, mm_vision_tower: str | None = None, shards: int = 1) -> None:
    """Write the original LLaVA layout: LLaVA folder (config with mm_* keys) + separate CLIP folder.

    `mm_vision_tower` is the path written into config.json (default: `clip_folder`);
    `shards` > 1 writes a sharded safetensors checkpoint with an index.
    """
    os.makedirs(model_folder, exist_ok=True)
    os.makedirs(clip_folder, exist_ok=True)
    llava_sd, clip_sd = original_layout_state_dict(model)

    keys = sorted(llava_sd)
    if shards == 1:
        save_file(llava_sd, os.path.join(model_folder, "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i in range(shards):
            name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            part = {k: llava_sd[k] for k in keys[i::shards]}
            save_file(part, os.path.join(model_folder, name), metadata={"format": "pt"})
            weight_map.update({k: name for k in part})
        with open(os.path.join(model_folder, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2)
    config = original_config(text_config, mm_vision_tower or clip_folder, clip_config["hidden_size"])
    with open(os.path.join(model_folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    tokenizer.save_pretrained(model_folder)

    save_file(clip_sd, os.path.join(clip_folder, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(clip_folder, "config.json"), "w") as f:
        json.dump({"architectures": ["CLIPVisionModel"], **clip_config}, f, indent=2)
    with open(os.path.join(clip_folder, "preprocessor_config.json"), "w") as f:
        json.dump(CLIP_PREPROCESSOR, f, indent=2)
