"""Train the ShapesPOPE v2 model the way LLaVA-1.5 is trained, each stage its own function.

    (a) `pretrain_language_model`: the Llama LM on text alone (captions and text-only QA of the
        world, which carry its co-occurrence statistics);
    (b) `pretrain_vision_encoder`: the CLIP vision tower, contrastively on image-caption pairs
        with a tiny text tower that is thrown away; then frozen;
    (c) `align_projector`: the projector alone on captioning (vision tower and LM frozen);
    (d) `instruction_tune`: projector and LM on image dialogues of many wordings (answers as
        words and short sentences, few hard negatives) mixed with text-only QA.

The architecture, the vicuna_v1 prompt and the image pipeline (pad to square, 336 px, 24x24 =
576 patches) are LLaVA-1.5's. Every example comes from the world's training stream by index,
so `train_world_model(settings)` is a pure function of its settings (seed included), given
the torch thread count.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from llava.constants import IGNORE_INDEX
from llava.conversation import conv_templates
from llava.mm_utils import process_images, tokenizer_image_token
from llava.model.tiny import (
    build_tokenizer,
    save_original_layout,
    tiny_clip_config,
    tiny_text_config,
)
from semantic_entropy.demo.world import (
    STREAM_TRAIN,
    WorldConfig,
    caption,
    render_scene,
    sample_scene,
    sample_spec,
)
from semantic_entropy.demo.world_text import (
    caption_turn,
    image_dialogue,
    text_dialogue,
    tokenizer_corpus,
)

CONV_MODE = "vicuna_v1"
DEFAULT_MODEL_FOLDER = "playground/models/llava-v1.5-shapes-tiny"
DEFAULT_CLIP_FOLDER = "playground/models/clip-vit-shapes-tiny"
DEFAULT_TEST_SET = "playground/data/eval/shapes_pope"

# Sub-streams of the training stream: one per stage, so stages never share an example.
STAGE_TEXT, STAGE_CLIP, STAGE_ALIGN, STAGE_INSTRUCT, STAGE_INSTRUCT_TEXT, STAGE_POOL = 1, 2, 3, 4, 5, 6


@dataclasses.dataclass(frozen=True)
class StageSettings:
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int = 20
    min_lr_frac: float = 0.05


@dataclasses.dataclass(frozen=True)
class RecipeSettings:
    seed: int = 0
    vocab_size: int = 500
    clip_hidden: int = 64
    clip_layers: int = 3           # LLaVA reads layer -2
    clip_heads: int = 2
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 2
    # Llama's and CLIP's default initializer_range; at 0.1 the text-only stage learns the
    # frame but hardly the co-occurrence (p(yes) gap 0.07 against 0.41 after 800 steps).
    init_std: float = 0.02
    text_lm: StageSettings = StageSettings(steps=800, batch_size=32, lr=3e-3)
    clip: StageSettings = StageSettings(steps=250, batch_size=32, lr=2e-3)
    align: StageSettings = StageSettings(steps=100, batch_size=16, lr=3e-3)
    instruct: StageSettings = StageSettings(steps=700, batch_size=16, lr=1.5e-3, warmup_steps=30)
    pool_size: int = 2400          # training images of stages (c) and (d), CLIP run once each
    instruct_text_rows: int = 4    # text-only QA rows beside the image rows of an instruction batch
    negatives_per_image: int = 3
    hard_negative_prob: float = 0.15
    world: WorldConfig = WorldConfig()  # noqa: RUF009 (frozen: shared safely)
    log_every: int = 25


# ---------------------------------------------------------------------------------------------
# Model, tokenizer, image processor
# ---------------------------------------------------------------------------------------------


def build_world_tokenizer(vocab_size: int):
    from llava.model.tiny import prompt_corpus

    return build_tokenizer(prompt_corpus(tokenizer_corpus(), conv_mode=CONV_MODE), vocab_size=vocab_size)


def model_configs(settings: RecipeSettings, vocab_size: int) -> tuple[dict, dict]:
    text_config = tiny_text_config(vocab_size, settings.text_hidden, settings.text_layers, settings.text_heads)
    text_config["initializer_range"] = settings.init_std
    clip_config = tiny_clip_config(settings.clip_hidden, settings.clip_layers)
    clip_config["num_attention_heads"] = settings.clip_heads
    clip_config["initializer_range"] = settings.init_std
    return text_config, clip_config


def initial_model(text_config: dict, clip_config: dict, seed: int):
    from llava.model.tiny import random_tiny_llava

    model = random_tiny_llava(text_config, clip_config, seed=seed)
    with torch.no_grad():
        model.lm_head.weight.div_(20.0)  # undo the test models' peaked init
    return model.train()


def image_processor():
    try:
        from transformers import CLIPImageProcessorPil
    except ImportError:
        from transformers import CLIPImageProcessor as CLIPImageProcessorPil
    from llava.model.tiny import CLIP_PREPROCESSOR

    return CLIPImageProcessorPil(**{k: v for k, v in CLIP_PREPROCESSOR.items() if k != "image_processor_type"})


# ---------------------------------------------------------------------------------------------
# Texts -> tensors
# ---------------------------------------------------------------------------------------------


def encode_dialogue(tokenizer, turns: Sequence[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, labels), both (L,), of a vicuna_v1 conversation; targets: each answer and its EOS.

    The conversation is tokenized whole, as LLaVA does; answer i's targets are the tokens
    between the tokens of the text up to its "ASSISTANT:" and those of the text up to its
    '</s>', which must be prefixes of the whole.
    """
    conv = conv_templates[CONV_MODE].copy()
    spans = []
    for user, answer in turns:
        conv.append_message(conv.roles[0], user)
        conv.append_message(conv.roles[1], None)
        before = tokenizer_image_token(conv.get_prompt(), tokenizer)
        conv.messages[-1][1] = answer
        after = tokenizer_image_token(conv.get_prompt(), tokenizer)
        spans.append((len(before), len(after)))
        if after[: len(before)] != before or after[-1] != tokenizer.eos_token_id:
            raise ValueError(f"answer {answer!r} does not tokenize after its prompt, ending with EOS")
    ids = after
    labels = [IGNORE_INDEX] * len(ids)
    for start, end in spans:
        labels[start:end] = ids[start:end]
    return torch.tensor(ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long)


def encode_document(tokenizer, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain text for language modelling: every token after BOS is a target, then EOS."""
    ids = tokenizer(text).input_ids + [tokenizer.eos_token_id]
    labels = [IGNORE_INDEX] + ids[1:]
    return torch.tensor(ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long)


@torch.no_grad()
def vision_features(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """(N, 3, 336, 336) pixels -> (N, 576, clip_hidden): CLIP layer -2 patch features, before the projector."""
    out = model.model.vision_tower(pixel_values.to(model.vision_dtype), output_hidden_states=True)
    return out.hidden_states[model.config.vision_feature_layer][:, 1:]


def sequence_loss(model, input_ids: Sequence[torch.Tensor], labels: Sequence[torch.Tensor],
                  features: torch.Tensor | None) -> torch.Tensor:
    """Mean next-token cross-entropy over the target tokens of rows with or without an image.

    Image rows hold one IMAGE_TOKEN_INDEX each and take `features` (num_images, 576,
    clip_hidden) in order, through the projector; rows are right-padded (causal attention: no
    real token sees a pad).
    """
    from semantic_entropy.demo.batching import multimodal_labels, to_right_padding

    projected = model.model.multi_modal_projector(features) if features is not None else None  # (N, 576, H)
    embeds, mask, _ = model.embed_multimodal(list(input_ids), projected)  # (B, T, H), (B, T)
    num_image_tokens = projected.shape[1] if projected is not None else 0
    targets = multimodal_labels(labels, input_ids, num_image_tokens).to(embeds.device)  # (B, T)
    embeds, targets = to_right_padding(embeds, mask), to_right_padding(targets, mask)
    positions = torch.arange(embeds.shape[1], device=embeds.device).expand(embeds.shape[0], -1)
    first = int((targets != IGNORE_INDEX).any(dim=0).nonzero()[0])
    keep = targets.shape[1] - first + 1
    logits = model(inputs_embeds=embeds, position_ids=positions, logits_to_keep=keep).logits  # (B, keep, V)
    shifted = targets[:, -keep:][:, 1:]
    return torch.nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1), shifted.flatten(),
                                             ignore_index=IGNORE_INDEX)


# ---------------------------------------------------------------------------------------------
# The training stream
# ---------------------------------------------------------------------------------------------


def training_scene(settings: RecipeSettings, stage: int, index: int):
    """(scene, rng) number `index` of a stage's sub-stream of the training stream."""
    rng = np.random.default_rng(np.random.SeedSequence([settings.seed, STREAM_TRAIN, stage, index]))
    return sample_scene(rng, settings.world, train=True), rng


def training_spec(settings: RecipeSettings, stage: int, index: int):
    """(spec, rng): what `training_scene` would hold, without placing or drawing it (text stages)."""
    rng = np.random.default_rng(np.random.SeedSequence([settings.seed, STREAM_TRAIN, stage, index]))
    return sample_spec(rng, settings.world, train=True), rng


def pixels(scenes, processor, model_config) -> torch.Tensor:
    return process_images([render_scene(s) for s in scenes], processor, model_config)  # (B, 3, 336, 336)


@dataclasses.dataclass
class ScenePool:
    """Training scenes of stages (c) and (d) with their frozen CLIP features, computed once."""
    scenes: list
    features: torch.Tensor   # (N, 576, clip_hidden)


def build_pool(model, settings: RecipeSettings, processor, chunk: int = 32) -> ScenePool:
    scenes = [training_scene(settings, STAGE_POOL, i)[0] for i in range(settings.pool_size)]
    features = [vision_features(model, pixels(scenes[i:i + chunk], processor, model.config))
                for i in range(0, len(scenes), chunk)]
    return ScenePool(scenes, torch.cat(features))


def pool_indices(settings: RecipeSettings, stage: int, step: int, batch_size: int) -> list[int]:
    """Pool rows of a step: a seeded permutation per epoch over the pool."""
    n = settings.pool_size
    start = step * batch_size
    out = []
    for k in range(start, start + batch_size):
        epoch, offset = divmod(k, n)
        order = np.random.default_rng(np.random.SeedSequence([settings.seed, STREAM_TRAIN, stage, 10**6 + epoch])).permutation(n)
        out.append(int(order[offset]))
    return out


def example_rng(settings: RecipeSettings, stage: int, step: int, row: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([settings.seed, STREAM_TRAIN, stage, step, row]))


def learning_rate(step: int, stage: StageSettings) -> float:
    """Linear warm-up, then cosine decay to `min_lr_frac * lr` at the last step.

    >>> s = StageSettings(steps=100, batch_size=1, lr=1.0, warmup_steps=10, min_lr_frac=0.0)
    >>> learning_rate(0, s), learning_rate(9, s), round(learning_rate(99, s), 6)
    (0.1, 1.0, 0.0)
    """
    if step < stage.warmup_steps:
        return stage.lr * (step + 1) / stage.warmup_steps
    progress = min(1.0, (step - stage.warmup_steps) / max(1, stage.steps - 1 - stage.warmup_steps))
    low = stage.lr * stage.min_lr_frac
    return low + 0.5 * (stage.lr - low) * (1 + math.cos(math.pi * progress))


def run_stage(name: str, stage: StageSettings, parameters, batch_loss: Callable[[int], torch.Tensor],
              log: Callable[[str], None] | None) -> list[float]:
    """AdamW over `parameters` for `stage.steps` steps of `batch_loss(step)`; returns the losses."""
    parameters = [p for p in parameters if p.requires_grad]
    decay = [p for p in parameters if p.dim() >= 2]
    rest = [p for p in parameters if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                                  lr=stage.lr, betas=(0.9, 0.98))
    losses, window, start = [], [], time.perf_counter()
    for step in range(stage.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, stage)
        loss = batch_loss(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        window.append(losses[-1])
        if log and ((step + 1) % 25 == 0 or step + 1 == stage.steps):
            log(f"[{name}] step {step + 1:4d}/{stage.steps}  loss {np.mean(window):.4f}  {time.perf_counter() - start:5.0f}s")
            window = []
    return losses


def set_trainable(model, vision: bool, projector: bool, language: bool) -> None:
    for module, flag in ((model.model.vision_tower, vision), (model.model.multi_modal_projector, projector),
                         (model.model.language_model, language), (model.lm_head, language)):
        for p in module.parameters():
            p.requires_grad_(flag)


# ---------------------------------------------------------------------------------------------
# The stages
# ---------------------------------------------------------------------------------------------


def pretrain_language_model(model, tokenizer, settings: RecipeSettings, log=print) -> list[float]:
    """(a) The LM alone on text: half of each batch captions, half text-only QA dialogues."""
    set_trainable(model, vision=False, projector=False, language=True)
    stage = settings.text_lm

    def batch_loss(step: int) -> torch.Tensor:
        rows = []
        for i in range(stage.batch_size):
            scene, rng = training_spec(settings, STAGE_TEXT, step * stage.batch_size + i)
            rows.append(encode_document(tokenizer, caption(scene, rng)) if i % 2 == 0
                        else encode_dialogue(tokenizer, text_dialogue(scene, rng)))
        return sequence_loss(model, [r[0] for r in rows], [r[1] for r in rows], None)

    params = list(model.model.language_model.parameters()) + list(model.lm_head.parameters())
    return run_stage("text LM", stage, params, batch_loss, log)


class TextTower(torch.nn.Module):
    """A tiny caption encoder for the contrastive step: embeddings, one transformer layer, mean pool."""

    def __init__(self, vocab_size: int, hidden: int, out_dim: int):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab_size, hidden)
        self.position = torch.nn.Parameter(torch.zeros(64, hidden))
        self.layer = torch.nn.TransformerEncoderLayer(hidden, 2, 2 * hidden, dropout=0.0, batch_first=True)
        self.proj = torch.nn.Linear(hidden, out_dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L) ids and mask -> (B, out_dim) unit embeddings."""
        x = self.embed(ids) + self.position[: ids.shape[1]]
        x = self.layer(x, src_key_padding_mask=~mask)
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return torch.nn.functional.normalize(self.proj(pooled), dim=-1)


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE of (B, D) unit embeddings; pair i is the positive of row i.

    >>> e = torch.eye(3)
    >>> round(float(contrastive_loss(e, e, torch.tensor(math.log(100.0)))), 4)
    0.0
    """
    logits = logit_scale.exp().clamp(max=100.0) * image @ text.T  # (B, B)
    target = torch.arange(len(image))
    return (torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.T, target)) / 2


def pretrain_vision_encoder(model, tokenizer, settings: RecipeSettings, processor, log=print) -> list[float]:
    """(b) The CLIP vision tower, contrastively on image-caption pairs; the text tower is discarded."""
    set_trainable(model, vision=True, projector=False, language=False)
    stage = settings.clip
    torch.manual_seed(settings.seed + 1)
    tower = TextTower(len(tokenizer), settings.clip_hidden, settings.clip_hidden)
    image_proj = torch.nn.Linear(settings.clip_hidden, settings.clip_hidden, bias=False)
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    vision = model.model.vision_tower

    def batch_loss(step: int) -> torch.Tensor:
        scenes, texts = [], []
        for i in range(stage.batch_size):
            scene, rng = training_scene(settings, STAGE_CLIP, step * stage.batch_size + i)
            scenes.append(scene)
            texts.append(caption(scene, rng))
        ids = [torch.tensor(tokenizer(t).input_ids) for t in texts]
        width = max(len(t) for t in ids)
        padded = torch.stack([torch.nn.functional.pad(t, (0, width - len(t))) for t in ids])  # (B, L)
        mask = torch.stack([torch.arange(width) < len(t) for t in ids])
        pooled = vision(pixels(scenes, processor, model.config)).pooler_output  # (B, clip_hidden)
        image = torch.nn.functional.normalize(image_proj(pooled), dim=-1)
        return contrastive_loss(image, tower(padded, mask), logit_scale)

    params = list(vision.parameters()) + list(tower.parameters()) + list(image_proj.parameters()) + [logit_scale]
    losses = run_stage("CLIP", stage, params, batch_loss, log)
    set_trainable(model, vision=False, projector=False, language=False)
    return losses


def align_projector(model, tokenizer, settings: RecipeSettings, pool: ScenePool, log=print) -> list[float]:
    """(c) The projector alone on captioning; the vision tower and the LM stay frozen."""
    set_trainable(model, vision=False, projector=True, language=False)
    stage = settings.align

    def batch_loss(step: int) -> torch.Tensor:
        index = pool_indices(settings, STAGE_ALIGN, step, stage.batch_size)
        rows = [encode_dialogue(tokenizer, caption_turn(pool.scenes[j], example_rng(settings, STAGE_ALIGN, step, i)))
                for i, j in enumerate(index)]
        return sequence_loss(model, [r[0] for r in rows], [r[1] for r in rows], pool.features[index])

    return run_stage("align", stage, model.model.multi_modal_projector.parameters(), batch_loss, log)


def instruct_batch(settings: RecipeSettings, tokenizer, pool: ScenePool, step: int):
    """Instruction batch `step`: image dialogues plus `instruct_text_rows` text-only QA dialogues."""
    stage = settings.instruct
    index = pool_indices(settings, STAGE_INSTRUCT, step, stage.batch_size)
    rows = [encode_dialogue(tokenizer, image_dialogue(pool.scenes[j], example_rng(settings, STAGE_INSTRUCT, step, i),
                                                      settings.negatives_per_image, settings.hard_negative_prob))
            for i, j in enumerate(index)]
    for i in range(settings.instruct_text_rows):
        scene, rng = training_spec(settings, STAGE_INSTRUCT_TEXT, step * settings.instruct_text_rows + i)
        rows.append(encode_dialogue(tokenizer, text_dialogue(scene, rng)))
    return [r[0] for r in rows], [r[1] for r in rows], pool.features[index]


def instruct_tune(model, tokenizer, settings: RecipeSettings, pool: ScenePool, log=print) -> list[float]:
    """(d) Projector and LM on image dialogues mixed with text-only QA; the vision tower frozen."""
    set_trainable(model, vision=False, projector=True, language=True)

    def batch_loss(step: int) -> torch.Tensor:
        return sequence_loss(model, *instruct_batch(settings, tokenizer, pool, step))

    return run_stage("instruct", settings.instruct, model.parameters(), batch_loss, log)


# ---------------------------------------------------------------------------------------------
# All of it
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainingResult:
    model: torch.nn.Module
    tokenizer: object
    text_config: dict
    clip_config: dict
    losses: dict[str, list[float]]
    seconds: dict[str, float]


ALL_STAGES = ("text_lm", "clip", "pool", "align", "instruct")
BEFORE_INSTRUCT = ("text_lm", "clip", "pool", "align")  # independent of the instruction-data settings


def train_world_model(settings: RecipeSettings, log: Callable[[str], None] | None = print,
                      stages: Sequence[str] = ALL_STAGES, start_state: dict | None = None) -> TrainingResult:
    """Stages (a)-(d) from scratch; deterministic given the settings and the torch thread count.

    `stages` runs a part of the recipe, in order, from `start_state` (a state dict the earlier
    stages left): `BEFORE_INSTRUCT` once, then ("pool", "instruct") per instruction setting,
    gives the weights the whole recipe gives for that setting.
    """
    unknown = [name for name in stages if name not in ALL_STAGES]
    if unknown:
        raise ValueError(f"unknown stages {unknown}; known: {ALL_STAGES}")
    tokenizer = build_world_tokenizer(settings.vocab_size)
    text_config, clip_config = model_configs(settings, len(tokenizer))
    model = initial_model(text_config, clip_config, settings.seed)
    if start_state is not None:
        model.load_state_dict(start_state)
    processor = image_processor()
    if log:
        sizes = {"vision": model.model.vision_tower, "projector": model.model.multi_modal_projector,
                 "language": model.model.language_model, "lm_head": model.lm_head}
        log("parameters: " + ", ".join(f"{k} {sum(p.numel() for p in m.parameters()):,}" for k, m in sizes.items())
            + f"; vocabulary {len(tokenizer)}")
    losses, seconds = {}, {}
    pool = []
    runs = {"text_lm": lambda: pretrain_language_model(model, tokenizer, settings, log),
            "clip": lambda: pretrain_vision_encoder(model, tokenizer, settings, processor, log),
            "pool": lambda: pool.append(build_pool(model, settings, processor)) or [],
            "align": lambda: align_projector(model, tokenizer, settings, pool[0], log),
            "instruct": lambda: instruct_tune(model, tokenizer, settings, pool[0], log)}
    for name in stages:
        start = time.perf_counter()
        losses[name] = runs[name]()
        seconds[name] = time.perf_counter() - start
        if log:
            log(f"{name}: {seconds[name]:.0f} s")
    set_trainable(model, vision=True, projector=True, language=True)
    return TrainingResult(model.eval(), tokenizer, text_config, clip_config, losses, seconds)


def save_world_model(result: TrainingResult, model_folder: str = DEFAULT_MODEL_FOLDER,
                     clip_folder: str = DEFAULT_CLIP_FOLDER) -> None:
    """Original LLaVA layout; `mm_vision_tower` relative to the model folder, so any CWD works."""
    relative_clip = os.path.relpath(os.path.abspath(clip_folder), os.path.abspath(model_folder))
    save_original_layout(result.model, result.tokenizer, result.text_config, result.clip_config,
                         model_folder, clip_folder, mm_vision_tower=relative_clip)
