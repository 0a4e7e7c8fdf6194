"""Train the embedded demo model: a tiny LLaVA-1.5 on ShapesPOPE, and measure it on the test set.

The model has LLaVA-1.5's structure (CLIP vision tower, two-layer GELU projector, Llama
language model) at a tiny size, and is trained the way LLaVA's instruction tuning trains:
the exact `vicuna_v1` prompt with POPE's answer suffix, the real image pipeline (pad to
square, CLIP processor at 336, so the 24x24 patch grid is kept), and the loss on the answer
tokens and EOS only. Every training example is generated on the fly from the ShapesPOPE
training stream, so a run is a pure function of its settings (seed included).

    settings = DemoTrainingSettings()
    result = train_demo_model(settings)
    quality = evaluate_demo_model(result.model, result.tokenizer, image_processor, "playground/data/eval/shapes_pope")
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX, POPE_ANSWER_SUFFIX
from llava.conversation import build_prompt
from llava.mm_utils import process_images, tokenizer_image_token
from llava.model.tiny import (CLIP_PREPROCESSOR, build_tokenizer, prompt_corpus, random_tiny_llava,
                              save_original_layout, tiny_clip_config, tiny_text_config)
from semantic_entropy.shapes_pope import CLASS_NAMES, ShapesPopeConfig, make_training_examples, pope_question

CONV_MODE = "vicuna_v1"
DEFAULT_MODEL_FOLDER = "playground/models/llava-v1.5-shapes-tiny"
DEFAULT_CLIP_FOLDER = "playground/models/clip-vit-shapes-tiny"
DEFAULT_TEST_SET = "playground/data/eval/shapes_pope"


@dataclasses.dataclass(frozen=True)
class DemoTrainingSettings:
    seed: int = 0                  # model init and the training stream of ShapesPOPE
    # Model (the vision tower keeps 336 / 14 = a 24x24 grid of 576 image tokens).
    vocab_size: int = 400          # an upper bound: the BPE stops when the corpus has no more merges
    clip_hidden: int = 64
    clip_layers: int = 4
    clip_heads: int = 2
    text_hidden: int = 128
    text_layers: int = 3
    text_heads: int = 4
    # Optimisation.
    steps: int = 1200
    batch_size: int = 32
    lr: float = 2e-3
    min_lr: float = 1e-4           # end of the cosine decay
    warmup_steps: int = 60
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    betas: tuple[float, float] = (0.9, 0.98)
    # Data: ShapesPOPE's training distribution (its co-occurrence prior, hard-negative share).
    data: ShapesPopeConfig = ShapesPopeConfig()
    log_every: int = 25


# ---------------------------------------------------------------------------------------------
# Tokenizer, model, image processor
# ---------------------------------------------------------------------------------------------


def build_demo_tokenizer(vocab_size: int):
    """The project's own BPE tokenizer over the vicuna_v1 frame and every ShapesPOPE question."""
    questions = [pope_question(name) for name in CLASS_NAMES]
    return build_tokenizer(prompt_corpus(questions, conv_mode=CONV_MODE), vocab_size=vocab_size)


def model_configs(settings: DemoTrainingSettings, vocab_size: int) -> tuple[dict, dict]:
    """(text_config, clip_config) dicts of the original layout's config.json and CLIP folder."""
    text_config = tiny_text_config(vocab_size, settings.text_hidden, settings.text_layers, settings.text_heads)
    clip_config = tiny_clip_config(settings.clip_hidden, settings.clip_layers)
    clip_config["num_attention_heads"] = settings.clip_heads
    return text_config, clip_config


def initial_model(text_config: dict, clip_config: dict, seed: int):
    """A freshly initialised tiny LLaVA in training mode.

    `random_tiny_llava` widens lm_head twentyfold so that untrained test models give peaked
    outputs; a model about to be trained starts from the ordinary init instead, since an
    over-confident start only has to be unlearned.
    """
    model = random_tiny_llava(text_config, clip_config, seed=seed)
    with torch.no_grad():
        model.lm_head.weight.div_(20.0)
    return model.train()


def demo_image_processor():
    """The CLIP processor of the shipped CLIP folder (PIL backend, as `load_image_processor`)."""
    try:
        from transformers import CLIPImageProcessorPil
    except ImportError:  # transformers releases without split backends
        from transformers import CLIPImageProcessor as CLIPImageProcessorPil
    return CLIPImageProcessorPil(**{k: v for k, v in CLIP_PREPROCESSOR.items() if k != "image_processor_type"})


# ---------------------------------------------------------------------------------------------
# Training examples -> tensors
# ---------------------------------------------------------------------------------------------


def pope_prompt(question: str) -> str:
    """The LLaVA-1.5 POPE prompt: vicuna_v1 frame, image slot, question plus answer suffix."""
    return build_prompt(question + POPE_ANSWER_SUFFIX, CONV_MODE)


def encode_example(tokenizer, question: str, answer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, labels), both (L,): prompt + answer tokens + EOS, labels IGNORE on the prompt.

    As LLaVA trains: the conversation is tokenized whole (`prompt + " " + answer`) and the
    targets are the tokens after the prompt's own tokens, which must be a prefix of it.
    """
    prompt = pope_prompt(question)
    prompt_ids = tokenizer_image_token(prompt, tokenizer)
    full_ids = tokenizer_image_token(prompt + " " + answer, tokenizer)
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError(f"the prompt's tokens are not a prefix of the prompt + answer tokens ({answer!r})")
    answer_ids = full_ids[len(prompt_ids):] + [tokenizer.eos_token_id]
    input_ids = torch.tensor(prompt_ids + answer_ids, dtype=torch.long)
    labels = torch.tensor([IGNORE_INDEX] * len(prompt_ids) + answer_ids, dtype=torch.long)
    return input_ids, labels


def multimodal_labels(labels: Sequence[torch.Tensor], input_ids: Sequence[torch.Tensor],
                      num_image_tokens: int) -> torch.Tensor:
    """(B, T) labels aligned with `embed_multimodal`'s left-padded rows.

    Each image slot becomes `num_image_tokens` IGNORE positions; pads on the left are IGNORE.
    """
    rows = []
    for ids, row in zip(input_ids, labels):
        pieces, start = [], 0
        for slot in (ids == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist():
            pieces += [row[start:slot], row.new_full((num_image_tokens,), IGNORE_INDEX)]
            start = slot + 1
        pieces.append(row[start:])
        rows.append(torch.cat(pieces))
    longest = max(len(r) for r in rows)
    out = torch.full((len(rows), longest), IGNORE_INDEX, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, longest - len(r):] = r
    return out


def training_batch(step: int, settings: DemoTrainingSettings, tokenizer, image_processor, model_config) -> dict:
    """Batch `step` of the training stream: examples [step * B, (step + 1) * B) of the seed."""
    examples = make_training_examples(settings.batch_size, settings.seed, start=step * settings.batch_size,
                                      config=settings.data)
    encoded = [encode_example(tokenizer, e.question, e.answer) for e in examples]
    return {
        "pixel_values": process_images([e.image for e in examples], image_processor, model_config),  # (B, 3, 336, 336)
        "input_ids": [ids for ids, _ in encoded],
        "labels": [labels for _, labels in encoded],
    }


def answer_loss(model, batch: dict) -> torch.Tensor:
    """Mean next-token cross-entropy over the answer tokens and EOS of a batch."""
    features = model.encode_images(batch["pixel_values"])  # (B, 576, H)
    embeds, mask, positions = model.embed_multimodal(batch["input_ids"], features)  # (B, T, H), (B, T), (B, T)
    labels = multimodal_labels(batch["labels"], batch["input_ids"], features.shape[1])  # (B, T)
    # Only the last positions carry targets (left padding aligns them on the right).
    keep = int((labels != IGNORE_INDEX).sum(dim=1).max()) + 1
    logits = model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
    targets = labels[:, -keep:][:, 1:]  # (B, keep - 1): the token each kept position predicts
    return torch.nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1), targets.flatten(),
                                             ignore_index=IGNORE_INDEX)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def learning_rate(step: int, settings: DemoTrainingSettings) -> float:
    """Linear warm-up, then cosine decay from `lr` to `min_lr` at the last step.

    >>> s = DemoTrainingSettings(steps=100, warmup_steps=10, lr=1.0, min_lr=0.0)
    >>> learning_rate(0, s), learning_rate(9, s), round(learning_rate(99, s), 6)
    (0.1, 1.0, 0.0)
    """
    if step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, settings.steps - 1 - settings.warmup_steps)
    return settings.min_lr + 0.5 * (settings.lr - settings.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclasses.dataclass
class TrainingResult:
    model: torch.nn.Module
    tokenizer: object
    text_config: dict
    clip_config: dict
    losses: list[float]        # one per step
    seconds: float


def train_demo_model(settings: DemoTrainingSettings, log: Callable[[str], None] | None = print) -> TrainingResult:
    """Train from scratch; deterministic given the settings (and the torch thread count)."""
    tokenizer = build_demo_tokenizer(settings.vocab_size)
    text_config, clip_config = model_configs(settings, len(tokenizer))
    model = initial_model(text_config, clip_config, settings.seed)
    image_processor = demo_image_processor()
    # No weight decay on norms and biases, as usual for transformers.
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=settings.lr, betas=settings.betas)
    if log:
        sizes = {"vision": model.model.vision_tower, "projector": model.model.multi_modal_projector,
                 "language": model.model.language_model, "lm_head": model.lm_head}
        log("parameters: " + ", ".join(f"{k} {sum(p.numel() for p in m.parameters()):,}" for k, m in sizes.items())
            + f"; vocabulary {len(tokenizer)}")
    losses = []
    start = time.perf_counter()
    window = []
    for step in range(settings.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, settings)
        batch = training_batch(step, settings, tokenizer, image_processor, model.config)
        loss = answer_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        losses.append(float(loss))
        window.append(float(loss))
        if log and ((step + 1) % settings.log_every == 0 or step + 1 == settings.steps):
            log(f"step {step + 1:5d}/{settings.steps}  loss {np.mean(window):.4f}  "
                f"lr {learning_rate(step, settings):.2e}  {time.perf_counter() - start:6.0f}s")
            window = []
    model.eval()
    return TrainingResult(model, tokenizer, text_config, clip_config, losses, time.perf_counter() - start)


def save_demo_model(result: TrainingResult, model_folder: str = DEFAULT_MODEL_FOLDER,
                    clip_folder: str = DEFAULT_CLIP_FOLDER) -> None:
    """Original LLaVA layout; `mm_vision_tower` relative to the model folder, so any CWD works."""
    relative_clip = os.path.relpath(os.path.abspath(clip_folder), os.path.abspath(model_folder))
    save_original_layout(result.model, result.tokenizer, result.text_config, result.clip_config,
                         model_folder, clip_folder, mm_vision_tower=relative_clip)


# ---------------------------------------------------------------------------------------------
# Quality on the ShapesPOPE test set
# ---------------------------------------------------------------------------------------------


def yes_no_token_ids(tokenizer) -> tuple[list[int], list[int]]:
    """Ids of the vocabulary's yes and no variants: text without '▁' lowercases to yes / no."""
    yes, no = [], []
    for token, index in tokenizer.get_vocab().items():
        word = token.replace("▁", "").lower()
        if word == "yes":
            yes.append(index)
        elif word == "no":
            no.append(index)
    if not yes or not no:
        raise ValueError("the tokenizer has no yes or no token")
    return sorted(yes), sorted(no)


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in nats of Bernoulli(p), 0 at p in {0, 1}.

    >>> binary_entropy(np.array([0.5, 1.0, 0.0])).round(6).tolist()
    [0.693147, 0.0, 0.0]
    """
    p = np.asarray(p, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(p * np.log(p) + (1 - p) * np.log1p(-p))
    return np.nan_to_num(h, nan=0.0)


def yes_probability(first_logits: torch.Tensor, yes_ids: Sequence[int], no_ids: Sequence[int]) -> np.ndarray:
    """(B, V) first-token logits -> (B,) P(yes variants) / (P(yes variants) + P(no variants))."""
    logprobs = torch.log_softmax(first_logits.double(), dim=-1)
    yes = torch.logsumexp(logprobs[:, list(yes_ids)], dim=-1)
    no = torch.logsumexp(logprobs[:, list(no_ids)], dim=-1)
    return torch.sigmoid(yes - no).numpy()


@torch.no_grad()
def answer_test_set(model, tokenizer, image_processor, test_dir: str, batch_size: int = 32,
                    max_new_tokens: int = 8, question_file: str | None = None) -> tuple[list[dict], dict]:
    """Greedy answers (LLaVA answer records) and {question_id: P(yes)} of the first answer token.

    Each image goes through CLIP once however many questions it has. `max_new_tokens` is
    short because trained answers are a word and EOS; it never cuts a parsed answer.
    """
    from llava.eval.vqa_data import load_image, load_questions
    from llava.model.generation import StepRunner, greedy_decode

    questions = load_questions(question_file or os.path.join(test_dir, "llava_pope_test.jsonl"))
    image_folder = os.path.join(test_dir, "images")
    names = sorted({q["image"] for q in questions})
    features = {}
    for i in range(0, len(names), batch_size):
        chunk = names[i:i + batch_size]
        pixels = process_images([load_image(image_folder, n, None) for n in chunk], image_processor, model.config)
        for name, f in zip(chunk, model.encode_images(pixels)):  # (576, H) each
            features[name] = f
    yes_ids, no_ids = yes_no_token_ids(tokenizer)
    answers, p_yes = [], {}
    for i in range(0, len(questions), batch_size):
        chunk = questions[i:i + batch_size]
        ids = [tokenizer_image_token(build_prompt(q["text"], CONV_MODE), tokenizer, return_tensors="pt") for q in chunk]
        embeds, mask, positions = model.embed_multimodal(ids, torch.stack([features[q["image"]] for q in chunk]))
        first = StepRunner(model, embeds, mask, positions).logits  # (B, V)
        decoded = greedy_decode(model, embeds, mask, positions, max_new_tokens, tokenizer.eos_token_id)
        for q, p, d in zip(chunk, yes_probability(first, yes_ids, no_ids), decoded):
            text = tokenizer.decode(d.token_ids, skip_special_tokens=True).strip()
            answers.append({"question_id": q["question_id"], "prompt": q["text"], "text": text})
            p_yes[q["question_id"]] = float(p)
    return answers, p_yes


def uncertainty_quality(records, p_yes: dict) -> dict:
    """POPE metrics plus the AUROC of the yes/no entropy for the greedy answer's errors, per split and 'all'."""
    from sklearn.metrics import roc_auc_score

    from llava.eval.eval_pope import evaluate_pope, pope_metrics

    per_split = evaluate_pope(records)
    groups = {c: [r for r in records if r.category == c] for c in per_split if c != "mean_f1"}
    groups["all"] = list(records)
    quality = {}
    for name, rows in groups.items():
        metrics = per_split.get(name) or pope_metrics(rows)
        errors = np.array([not r.is_correct for r in rows])
        entropy = binary_entropy(np.array([p_yes[r.question_id] for r in rows]))
        auroc = float(roc_auc_score(errors, entropy)) if 0 < errors.sum() < len(errors) else None
        quality[name] = {"n": len(rows), "accuracy": metrics["accuracy"], "f1": metrics["f1"],
                         "yes_ratio": metrics["yes_ratio"], "errors": int(errors.sum()),
                         "auroc_yes_no_entropy": auroc}
    return quality


def evaluate_demo_model(model, tokenizer, image_processor, test_dir: str = DEFAULT_TEST_SET,
                        batch_size: int = 32) -> dict:
    """Accuracy, F1, yes-ratio and yes/no-entropy AUROC on the ShapesPOPE test set."""
    from llava.eval.eval_pope import join_pope

    answers, p_yes = answer_test_set(model, tokenizer, image_processor, test_dir, batch_size)
    records, _ = join_pope(os.path.join(test_dir, "coco"), os.path.join(test_dir, "llava_pope_test.jsonl"), answers)
    return uncertainty_quality(records, p_yes)


def format_quality(quality: dict) -> str:
    lines = [f"{'split':<12} {'n':>5} {'acc':>6} {'f1':>6} {'yes%':>6} {'errors':>6} {'AUROC(H_yes/no)':>16}"]
    for name, q in quality.items():
        auroc = "n/a" if q["auroc_yes_no_entropy"] is None else f"{q['auroc_yes_no_entropy']:.3f}"
        lines.append(f"{name:<12} {q['n']:>5} {q['accuracy']:>6.3f} {q['f1']:>6.3f} {q['yes_ratio']:>6.3f} "
                     f"{q['errors']:>6} {auroc:>16}")
    return "\n".join(lines)
