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
from llava.conversation import build_prompt, conv_templates
from llava.mm_utils import process_images, tokenizer_image_token
from llava.model.tiny import (
    CLIP_PREPROCESSOR,
    build_tokenizer,
    prompt_corpus,
    random_tiny_llava,
    save_original_layout,
    tiny_clip_config,
    tiny_text_config,
)
from semantic_entropy.demo.shapes_pope import (
    CLASS_NAMES,
    ShapesPopeConfig,
    TrainingExample,
    companion_map,
    make_training_examples,
    pope_question,
)
from semantic_entropy.sampling.answer_tokens import yes_no_token_ids

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
    clip_layers: int = 3           # LLaVA reads layer -2, so the last layer is never used
    clip_heads: int = 1
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 2
    # Llama's default initializer_range 0.02 suits hidden sizes in the thousands; at 64 it
    # starts the language model near a saddle and learning stalls for hundreds of steps.
    text_init_std: float = 0.1
    # Optimisation.
    steps: int = 900
    batch_size: int = 32
    lr: float = 2e-3
    min_lr: float = 1e-4           # end of the cosine decay
    warmup_steps: int = 50
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    betas: tuple[float, float] = (0.9, 0.98)
    # Data: ShapesPOPE's training distribution. Asking absent companions less often than the
    # generator's default (0.75) keeps the co-occurrence prior alive, as in real data where
    # absent objects are seldom asked about.
    data: ShapesPopeConfig = ShapesPopeConfig(hard_negative_prob=0.4)
    # Ask each training image about every object it holds and absent classes too, as a
    # multi-turn conversation (LLaVA-1.5 packs the VQA questions of one image the same way);
    # the first turn is the generator's own question in the exact POPE prompt. False: that
    # turn only. Many answers per image make the 576 image tokens' cost pay off.
    all_objects_per_image: bool = True
    extra_negatives: int = 13      # more absent classes beyond as many as present ones (13: all)
    log_every: int = 25
    # Where it runs. Batches depend on the step alone, so workers change nothing but speed;
    # on a GPU the data (PIL drawing and resizing) needs them to keep up.
    device: str = "cpu"
    data_workers: int = 0


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
    text_config["initializer_range"] = settings.text_init_std
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


# Seed-stream tag of the extra questions, apart from ShapesPOPE's own streams (1-4).
STREAM_EXTRA_TURNS = 101


def conversation_turns(example: TrainingExample, seed: int, hard_negative_prob: float,
                       all_objects: bool = True, extra_negatives: int = 0) -> list[tuple[str, str]]:
    """(question, answer) turns about one training image; the first is the example's own.

    With `all_objects`, every present class is asked once (Yes), then absent classes (No):
    as many as present ones, as POPE asks per image, plus `extra_negatives` more. Each absent
    usual companion of a present object is askable with probability `hard_negative_prob`
    (how often the data contradicts the co-occurrence prior) and comes first; the rest are
    uniformly drawn absent classes. The turns after the first come in random order.
    """
    turns = [(example.question, example.answer)]
    if not all_objects:
        return turns
    rng = np.random.default_rng(np.random.SeedSequence([seed, STREAM_EXTRA_TURNS, example.index]))
    present = sorted({o.name for o in example.objects})
    asked = {example.asked_class}
    companions = companion_map()
    absent = [name for name in CLASS_NAMES if name not in present and name not in asked]
    hard = [name for name in absent if any(name in companions[p] for p in present)]
    askable_hard = [name for name in hard if rng.random() < hard_negative_prob]
    easy = [name for name in absent if name not in hard]
    candidates = list(rng.permutation(askable_hard)) + list(rng.permutation(easy))
    negatives = min(len(candidates), len(present) - (example.answer == "No") + extra_negatives)
    extra = [(pope_question(name), "Yes") for name in present if name not in asked]
    extra += [(pope_question(str(name)), "No") for name in candidates[:negatives]]
    order = rng.permutation(len(extra))
    return turns + [extra[int(i)] for i in order]


def encode_conversation(tokenizer, turns: Sequence[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, labels) of a vicuna_v1 conversation; targets: each answer's tokens and its '</s>'.

    The conversation text is tokenized whole, as LLaVA does. The first turn's prompt (the
    exact POPE prompt) must tokenize to a prefix of it. Each answer's tokens are those that
    follow "ASSISTANT:" in `prompt + " " + answer` (as in `encode_example`); every turn must
    end with them, right after the "ASSISTANT:" token, then the EOS that '</s>' becomes.
    One turn gives `encode_example`'s ids and labels.
    """
    conv = conv_templates[CONV_MODE].copy()
    for index, (question, answer) in enumerate(turns):
        conv.append_message(conv.roles[0], ("<image>\n" if index == 0 else "") + question + POPE_ANSWER_SUFFIX)
        conv.append_message(conv.roles[1], answer)
    ids = tokenizer_image_token(conv.get_prompt(), tokenizer)
    prompt = pope_prompt(turns[0][0])
    prompt_ids = tokenizer_image_token(prompt, tokenizer)
    if ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError("the POPE prompt's tokens are not a prefix of the conversation's tokens")
    assistant_id = prompt_ids[-1]
    answer_ids = {}
    for answer in sorted({a for _, a in turns}):
        with_answer = tokenizer_image_token(prompt + " " + answer, tokenizer)
        if with_answer[: len(prompt_ids)] != prompt_ids:
            raise ValueError(f"the prompt's tokens are not a prefix of the prompt + answer tokens ({answer!r})")
        answer_ids[answer] = with_answer[len(prompt_ids):]
    eos_id = tokenizer.eos_token_id
    eos_positions = [i for i, t in enumerate(ids) if t == eos_id]
    if len(eos_positions) != len(turns):
        raise ValueError(f"{len(turns)} turns but {len(eos_positions)} EOS tokens: '</s>' must tokenize to EOS")
    labels = [IGNORE_INDEX] * len(ids)
    for (_, answer), eos in zip(turns, eos_positions):
        start = eos - len(answer_ids[answer])
        if ids[start:eos] != answer_ids[answer] or ids[start - 1] != assistant_id:
            raise ValueError(f"a turn does not end with 'ASSISTANT:' and the tokens of {answer!r}")
        labels[start: eos + 1] = ids[start: eos + 1]
    return torch.tensor(ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long)


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
    encoded = [encode_conversation(tokenizer, conversation_turns(e, settings.seed, settings.data.hard_negative_prob,
                                                                 settings.all_objects_per_image, settings.extra_negatives))
               for e in examples]
    return {
        "pixel_values": process_images([e.image for e in examples], image_processor, model_config),  # (B, 3, 336, 336)
        "input_ids": [ids for ids, _ in encoded],
        "labels": [labels for _, labels in encoded],
    }


def to_right_padding(rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Left-padded (B, T, ...) rows, given their (B, T) mask, with the padding moved to the right."""
    pads = (mask.shape[1] - mask.sum(dim=1)).tolist()
    return torch.stack([torch.roll(row, -int(pad), dims=0) for row, pad in zip(rows, pads)])


def answer_loss(model, batch: dict) -> torch.Tensor:
    """Mean next-token cross-entropy over the answer tokens and EOS of a batch.

    Rows are right-padded for training: under causal attention no real token sees a pad, so
    no mask is needed and the attention kernel skips the masked half (a quarter faster on the
    CPU than left padding with an explicit mask); the math is the same.
    """
    features = model.encode_images(batch["pixel_values"])  # (B, 576, H)
    embeds, mask, _ = model.embed_multimodal(batch["input_ids"], features)  # (B, T, H), (B, T)
    labels = multimodal_labels(batch["labels"], batch["input_ids"], features.shape[1]).to(embeds.device)  # (B, T)
    embeds, labels = to_right_padding(embeds, mask), to_right_padding(labels, mask)
    positions = torch.arange(embeds.shape[1], device=embeds.device).expand(embeds.shape[0], -1)  # (B, T)
    # Logits only from the position before the first target on (the image positions carry none).
    first_target = int((labels != IGNORE_INDEX).any(dim=0).nonzero()[0])
    keep = labels.shape[1] - first_target + 1
    logits = model(inputs_embeds=embeds, position_ids=positions, logits_to_keep=keep).logits  # (B, keep, V)
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


class TrainingBatches(torch.utils.data.Dataset):
    """Item `step` is training batch `step`: a pure function of the step, whichever process makes it."""

    def __init__(self, settings: DemoTrainingSettings, tokenizer, image_processor, model_config):
        self.settings = settings
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.model_config = model_config

    def __len__(self) -> int:
        return self.settings.steps

    def __getitem__(self, step: int) -> dict:
        return training_batch(step, self.settings, self.tokenizer, self.image_processor, self.model_config)


def batch_stream(settings: DemoTrainingSettings, tokenizer, model_config):
    """Training batches in step order, made in `settings.data_workers` processes (0: this one)."""
    from types import SimpleNamespace

    # Workers get only what process_images reads from the model config.
    config = SimpleNamespace(image_aspect_ratio=model_config.image_aspect_ratio)
    batches = TrainingBatches(settings, tokenizer, demo_image_processor(), config)
    return torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False, num_workers=settings.data_workers,
                                       prefetch_factor=4 if settings.data_workers else None)


def train_demo_model(settings: DemoTrainingSettings, log: Callable[[str], None] | None = print) -> TrainingResult:
    """Train from scratch; deterministic given the settings (and the device and torch thread count)."""
    tokenizer = build_demo_tokenizer(settings.vocab_size)
    text_config, clip_config = model_configs(settings, len(tokenizer))
    model = initial_model(text_config, clip_config, settings.seed).to(settings.device)
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
    for step, batch in enumerate(batch_stream(settings, tokenizer, model.config)):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, settings)
        loss = answer_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        losses.append(float(loss.detach()))
        window.append(losses[-1])
        if log and ((step + 1) % settings.log_every == 0 or step + 1 == settings.steps):
            log(f"step {step + 1:5d}/{settings.steps}  loss {np.mean(window):.4f}  "
                f"lr {learning_rate(step, settings):.2e}  {time.perf_counter() - start:6.0f}s")
            window = []
    model.cpu().eval()
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
    return torch.sigmoid(yes - no).cpu().numpy()


def encode_image_files(model, image_processor, image_folder: str, names: Sequence[str],
                       batch_size: int = 32) -> dict[str, torch.Tensor]:
    """{file name: (576, H) projected image features}, each image through CLIP once."""
    from llava.eval.vqa_data import load_image

    features = {}
    for i in range(0, len(names), batch_size):
        chunk = list(names[i:i + batch_size])
        pixels = process_images([load_image(image_folder, n, None) for n in chunk], image_processor, model.config)
        features.update(zip(chunk, model.encode_images(pixels)))
    return features


def prompt_inputs(model, tokenizer, questions: Sequence[dict], features: dict[str, torch.Tensor]):
    """Left-padded (embeds, mask, positions) of question records' POPE prompts with their images."""
    ids = [tokenizer_image_token(build_prompt(q["text"], CONV_MODE), tokenizer, return_tensors="pt") for q in questions]
    return model.embed_multimodal(ids, torch.stack([features[q["image"]] for q in questions]))


@torch.no_grad()
def first_token_logits(model, tokenizer, image_processor, questions: Sequence[dict], image_folder: str) -> torch.Tensor:
    """(B, V) logits of the first answer token of question records (text with the answer suffix)."""
    from llava.model.generation import StepRunner

    features = encode_image_files(model, image_processor, image_folder, sorted({q["image"] for q in questions}))
    return StepRunner(model, *prompt_inputs(model, tokenizer, questions, features)).logits


@torch.no_grad()
def answer_test_set(model, tokenizer, image_processor, test_dir: str, batch_size: int = 32,
                    max_new_tokens: int = 8, question_file: str | None = None) -> tuple[list[dict], dict]:
    """Greedy answers (LLaVA answer records) and {question_id: P(yes)} of the first answer token.

    Each image goes through CLIP once however many questions it has. `max_new_tokens` is
    short because trained answers are a word and EOS; it never cuts a parsed answer.
    """
    from llava.eval.vqa_data import load_questions
    from llava.model.generation import StepRunner, greedy_decode

    questions = load_questions(question_file or os.path.join(test_dir, "llava_pope_test.jsonl"))
    features = encode_image_files(model, image_processor, os.path.join(test_dir, "images"),
                                  sorted({q["image"] for q in questions}), batch_size)
    yes_ids, no_ids = yes_no_token_ids(tokenizer)
    answers, p_yes = [], {}
    for i in range(0, len(questions), batch_size):
        chunk = questions[i:i + batch_size]
        embeds, mask, positions = prompt_inputs(model, tokenizer, chunk, features)
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
