"""Read and validate stage-1 generations, in either of the two accepted shapes.

1. Generations JSON lines (stage 1's records, see docs/design.md), one object per question::

       {"question_id": 1, "category": "adversarial", "image": "x.jpg", "prompt": "...",
        "greedy": ANSWER, "samples": [ANSWER, ...],
        "first_token": {"yes_mass": 0.81, "no_mass": 0.17},      (optional)
        "p_true": 0.93,                                          (optional, a later pass)
        "image_variants": {"mean": {"yes_mass": 0.02, "no_mass": 0.95}, ...},  (optional,
             stage 1 --image-variants: the first-token yes/no mass with each degraded image;
             semantic_entropy.vision_probes adds mask_attended and mask_random)
        "question_variants": {"contain": {"yes_mass": ..., "no_mass": ...}, ...},  (optional,
             semantic_entropy.vision_probes: the same with the question reworded)
        "baseline_probes": {...},                                (optional,
             semantic_entropy.baseline_probes: the published detectors' inputs, see
             `parse_baseline_probes`)
        "method_probes": {...} or null,                         (optional,
             semantic_entropy.method_probes: the method-v2 scores' inputs, see
             `parse_method_probes`)
        "sampling": {...}, "model_id": "..."}

   ANSWER = {"text": str, "token_ids": [int], "token_logprobs": [float],
             "token_entropies": [float], "ends_with_eos": bool}; the token fields are
   optional as a group, but when an answer has any of them it needs `ends_with_eos`, and when
   one sample has log-probs every sample must.

2. A responses object: ONE JSON object keyed by question id, answers as bare strings::

       {"1": {"question_id": 1, "prompt": "...", "responses": ["Yes", ...], "metadata": {...}}}

   No greedy answer and no log-probs; measures that need them are skipped by the registry.

Every problem raises `GenerationsError` naming the file, the line (or key) and the question_id.
`QuestionGenerations.available_fields()` tells which measure inputs a record provides.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass

from llava.constants import POPE_ANSWER_SUFFIX
from llava.jsonl_io import JsonlError, iter_jsonl

# Names of the inputs a measure may need (see registry.Measure.needs).
SAMPLE_TEXTS = "sample_texts"
SAMPLE_TOKEN_LOGPROBS = "sample_token_logprobs"
GREEDY_TEXT = "greedy_text"
GREEDY_TOKEN_LOGPROBS = "greedy_token_logprobs"
GREEDY_TOKEN_ENTROPIES = "greedy_token_entropies"
FIRST_TOKEN_YES_NO_MASS = "first_token_yes_no_mass"
P_TRUE = "p_true"
IMAGE_VARIANT_PREFIX = "image_variant_yes_no_mass:"  # + variant name, e.g. "image_variant_yes_no_mass:mean"


QUESTION_VARIANT_PREFIX = "question_variant_yes_no_mass:"  # + rewording name, e.g. "...:contain"

# The published detectors' inputs (semantic_entropy.baseline_probes), one name per detector.
VAUQ_ENTROPIES = "vauq_entropies"
ANSWER_IMAGE_ATTENTION = "answer_image_attention"
GLSIM_SIMILARITIES = "glsim_similarities"
NO_IMAGE_YES_NO_MASS = "no_image_yes_no_mass"
VL_UNCERTAINTY_PAIRS = "vl_uncertainty_pairs"
VL_BLUR_ONLY_PAIRS = "vl_blur_only_pairs"  # baseline_probes --vl-blur-only-ablation
# The method-v2 scores' inputs (semantic_entropy.method_probes).
OBJECT_GROUNDING = "object_grounding"
ANSWER_COUNTERFACTUALS = "answer_counterfactuals"


def image_variant_field(variant: str) -> str:
    """The measure input naming one image variant's first-token yes/no mass.

    >>> image_variant_field("blur")
    'image_variant_yes_no_mass:blur'
    """
    return IMAGE_VARIANT_PREFIX + variant


def question_variant_field(rewording: str) -> str:
    """The measure input naming one rewording's first-token yes/no mass.

    >>> question_variant_field("see")
    'question_variant_yes_no_mass:see'
    """
    return QUESTION_VARIANT_PREFIX + rewording

GENERATIONS_SHAPE = "generations_jsonl"
NOTES_SHAPE = "notes_json"

# A log-softmax computed in half precision can round a little above 0.
LOGPROB_ROUNDING_TOLERANCE = 1e-3


class GenerationsError(JsonlError):
    """Malformed generations; the message names the file, the line or key, and the question_id."""


@dataclass(frozen=True)
class Answer:
    text: str
    token_logprobs: tuple[float, ...] | None = None  # (T,), EOS included when ends_with_eos
    token_entropies: tuple[float, ...] | None = None  # (T,)
    ends_with_eos: bool | None = None


@dataclass(frozen=True)
class QuestionGenerations:
    question_id: object
    category: str | None
    prompt: str
    greedy: Answer | None
    samples: tuple[Answer, ...]
    yes_no_mass: tuple[float, float] | None = None  # (yes_mass, no_mass) of the first token
    p_true: float | None = None
    image_variant_masses: dict | None = None  # variant -> (yes_mass, no_mass) with that degraded image
    question_variant_masses: dict | None = None  # rewording -> (yes_mass, no_mass) with that question wording
    source: str = "?"  # "file:line" or "file[key]", for messages
    baseline_probes: "BaselineProbes | None" = None  # semantic_entropy.baseline_probes's field
    method_probes: "MethodProbes | None" = None  # semantic_entropy.method_probes's field

    @property
    def question(self) -> str:
        return question_text(self.prompt)

    @property
    def sample_texts(self) -> list[str]:
        return [answer.text for answer in self.samples]

    def available_fields(self) -> frozenset[str]:
        fields = {SAMPLE_TEXTS}
        if all(answer.token_logprobs is not None for answer in self.samples):
            fields.add(SAMPLE_TOKEN_LOGPROBS)
        if self.greedy is not None:
            fields.add(GREEDY_TEXT)
            if self.greedy.token_logprobs is not None:
                fields.add(GREEDY_TOKEN_LOGPROBS)
            if self.greedy.token_entropies is not None:
                fields.add(GREEDY_TOKEN_ENTROPIES)
        if self.yes_no_mass is not None:
            fields.add(FIRST_TOKEN_YES_NO_MASS)
        if self.p_true is not None:
            fields.add(P_TRUE)
        for variant in self.image_variant_masses or {}:
            fields.add(image_variant_field(variant))
        for rewording in self.question_variant_masses or {}:
            fields.add(question_variant_field(rewording))
        if self.baseline_probes is not None:
            fields |= self.baseline_probes.available_fields()
        if self.method_probes is not None:
            fields |= {OBJECT_GROUNDING, ANSWER_COUNTERFACTUALS}
        return frozenset(fields)

    def where(self) -> str:
        return f"{self.source}: question_id {self.question_id!r}"


def question_text(prompt: str) -> str:
    """The question a judge sees: the prompt without LLaVA's POPE answer-format instruction.

    >>> question_text("Is there a dog in the image?\\nAnswer the question using a single word or phrase.")
    'Is there a dog in the image?'
    >>> question_text("  What is shown?  ")
    'What is shown?'
    """
    if prompt.endswith(POPE_ANSWER_SUFFIX):
        prompt = prompt[: -len(POPE_ANSWER_SUFFIX)]
    return prompt.strip()


# --------------------------------------------------------------------------------------------
# Validation of one record


def _number_list(value, what: str, fail, finite_check=None) -> tuple[float, ...]:
    if not isinstance(value, list):
        fail(f"{what} must be a list, got {type(value).__name__}")
    numbers = []
    for i, x in enumerate(value):
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            fail(f"{what}[{i}] is not a number: {x!r}")
        if not math.isfinite(x):
            fail(f"{what}[{i}] is {x} (not finite)")
        if finite_check is not None:
            finite_check(i, float(x))
        numbers.append(float(x))
    return tuple(numbers)


def _parse_answer(raw, what: str, fail) -> Answer:
    if not isinstance(raw, dict):
        fail(f"{what} must be an object, got {type(raw).__name__}")
    if "text" not in raw:
        fail(f"{what} is missing field 'text'")
    if not isinstance(raw["text"], str):
        fail(f"{what}.text must be a string")
    token_fields = [f for f in ("token_ids", "token_logprobs", "token_entropies") if raw.get(f) is not None]
    if not token_fields:
        return Answer(text=raw["text"])
    ends_with_eos = raw.get("ends_with_eos")
    if not isinstance(ends_with_eos, bool):
        fail(f"{what} has {token_fields[0]} but no boolean 'ends_with_eos'")

    def logprob_at_most_zero(i, x):
        if x > LOGPROB_ROUNDING_TOLERANCE:
            fail(f"{what}.token_logprobs[{i}] = {x} > 0: not a log-probability")

    def entropy_non_negative(i, x):
        if x < -LOGPROB_ROUNDING_TOLERANCE:
            fail(f"{what}.token_entropies[{i}] = {x} < 0")

    lengths = {}
    token_logprobs = token_entropies = None
    if raw.get("token_ids") is not None:
        ids = raw["token_ids"]
        if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
            fail(f"{what}.token_ids must be a list of integers")
        lengths["token_ids"] = len(ids)
    if raw.get("token_logprobs") is not None:
        token_logprobs = _number_list(raw["token_logprobs"], f"{what}.token_logprobs", fail, logprob_at_most_zero)
        lengths["token_logprobs"] = len(token_logprobs)
    if raw.get("token_entropies") is not None:
        token_entropies = _number_list(raw["token_entropies"], f"{what}.token_entropies", fail, entropy_non_negative)
        lengths["token_entropies"] = len(token_entropies)
    if len(set(lengths.values())) > 1:
        fail(f"{what}: token fields differ in length: {lengths}")
    if next(iter(lengths.values())) == 0:
        fail(f"{what} has no tokens")
    return Answer(
        text=raw["text"], token_logprobs=token_logprobs, token_entropies=token_entropies, ends_with_eos=ends_with_eos
    )


def _failer(source: str, question_id):
    def fail(message: str):
        raise GenerationsError(f"{source}: question_id {question_id!r}: {message}")

    return fail


def _parse_yes_no_mass(raw, fail, what: str = "first_token") -> tuple[float, float] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        fail(f"{what} must be an object with yes_mass and no_mass")
    masses = []
    for key in ("yes_mass", "no_mass"):
        if key not in raw:
            fail(f"{what} is missing field {key!r}")
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            fail(f"{what}.{key} is not a finite number: {value!r}")
        if not 0.0 <= value <= 1.0 + 1e-6:
            fail(f"{what}.{key} = {value} is not a probability")
        masses.append(float(value))
    return masses[0], masses[1]


def _parse_variants(raw, fail, field: str) -> dict | None:
    """`image_variants` / `question_variants`: name -> (yes_mass, no_mass)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        fail(f"{field} must be an object mapping a variant name to its first-token yes/no mass")
    return {str(variant): _parse_yes_no_mass(summary, fail, f"{field}.{variant}")
            for variant, summary in raw.items() if summary is not None}


def _parse_p_true(raw, fail) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw) or not 0 <= raw <= 1:
        fail(f"p_true must be a probability, got {raw!r}")
    return float(raw)


# --------------------------------------------------------------------------------------------
# The published detectors' inputs (semantic_entropy.baseline_probes): one object per record,
#
#     "baseline_probes": {
#       "vauq": {"alpha": .6, "entropies": [bits per answer step], "masked_entropies": [...],
#                "no_image_entropies": [...], ...},
#       "attention_ratio": {"layer_image_shares": [per layer], "layers": [a, b]},
#       "glsim": {"global": cos, "local": cos, ...} or null (not a POPE question),
#       "no_image": {"yes_mass": ..., "no_mass": ...},
#       "vl_uncertainty": {"cluster_masses": [[yes, no, other] per pair], "answers": ["yes", ...],
#                          "image_only_cluster_masses": [...the question unreworded], ...}
#                         or null (not a POPE question)}


@dataclass(frozen=True)
class BaselineProbes:
    vauq_alpha: float | None = None
    vauq_entropies: tuple[float, ...] | None = None  # (n,) bits, with the image
    vauq_masked_entropies: tuple[float, ...] | None = None  # (n,) the most attended image tokens hidden
    vauq_no_image_entropies: tuple[float, ...] | None = None  # (n,) without the image
    layer_image_shares: tuple[float, ...] | None = None  # (L,) first answer token's image attention per layer
    svar_layers: tuple[int, int] | None = None
    glsim_similarities: tuple[float, float] | None = None  # (global, local)
    no_image_mass: tuple[float, float] | None = None
    vl_cluster_masses: tuple[tuple[float, float, float], ...] | None = None  # (pairs, 3)
    vl_answers: tuple[str, ...] | None = None
    vl_image_only_masses: tuple[tuple[float, float, float], ...] | None = None  # (pairs, 3) the question unreworded

    def available_fields(self) -> set[str]:
        fields = set()
        if self.vauq_entropies is not None:
            fields.add(VAUQ_ENTROPIES)
        if self.layer_image_shares is not None:
            fields.add(ANSWER_IMAGE_ATTENTION)
        if self.glsim_similarities is not None:
            fields.add(GLSIM_SIMILARITIES)
        if self.no_image_mass is not None:
            fields.add(NO_IMAGE_YES_NO_MASS)
        if self.vl_answers is not None:
            fields.add(VL_UNCERTAINTY_PAIRS)
        if self.vl_image_only_masses is not None:
            fields.add(VL_BLUR_ONLY_PAIRS)
        return fields


def _object(raw, what: str, fail, keys: tuple[str, ...]) -> dict:
    if not isinstance(raw, dict):
        fail(f"{what} must be an object")
    missing = [key for key in keys if key not in raw]
    if missing:
        fail(f"{what} is missing field(s) {missing}")
    return raw


def _number(value, what: str, fail) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        fail(f"{what} is not a finite number: {value!r}")
    return float(value)


def parse_baseline_probes(raw, fail) -> BaselineProbes | None:
    """Validate a record's `baseline_probes` (None when absent)."""
    if raw is None:
        return None
    _object(raw, "baseline_probes", fail, ("vauq", "attention_ratio", "glsim", "no_image", "vl_uncertainty"))
    vauq = _object(raw["vauq"], "baseline_probes.vauq", fail,
                   ("alpha", "entropies", "masked_entropies", "no_image_entropies"))
    steps = {key: _number_list(vauq[key], f"baseline_probes.vauq.{key}", fail)
             for key in ("entropies", "masked_entropies", "no_image_entropies")}
    if len({len(v) for v in steps.values()}) != 1 or not steps["entropies"]:
        fail(f"baseline_probes.vauq: entropy lists differ in length or are empty: "
             f"{ {k: len(v) for k, v in steps.items()} }")
    ratio = _object(raw["attention_ratio"], "baseline_probes.attention_ratio", fail, ("layer_image_shares", "layers"))
    layers = ratio["layers"]
    if not (isinstance(layers, list) and len(layers) == 2 and all(isinstance(x, int) for x in layers)):
        fail(f"baseline_probes.attention_ratio.layers must be [a, b], got {layers!r}")
    glsim = None
    if raw["glsim"] is not None:
        g = _object(raw["glsim"], "baseline_probes.glsim", fail, ("global", "local"))
        glsim = (_number(g["global"], "baseline_probes.glsim.global", fail),
                 _number(g["local"], "baseline_probes.glsim.local", fail))
    masses = answers = image_only = None
    if raw["vl_uncertainty"] is not None:
        v = _object(raw["vl_uncertainty"], "baseline_probes.vl_uncertainty", fail, ("cluster_masses", "answers"))
        # image_only_cluster_masses: the blur-only ablation, present when the pass was asked for it
        masses, image_only = (tuple(tuple(_number_list(m, f"baseline_probes.vl_uncertainty.{key}[]", fail))
                                    for m in v[key]) if key in v else None
                              for key in ("cluster_masses", "image_only_cluster_masses"))
        answers = v["answers"]
        if (any(len(m) != 3 for m in masses + (image_only or ())) or not isinstance(answers, list) or not answers
                or not len(answers) == len(masses) == len(image_only or masses)
                or not all(isinstance(a, str) for a in answers)):
            fail("baseline_probes.vl_uncertainty needs one [yes, no, other] mass (each wording) and one answer per pair")
        answers = tuple(answers)
    return BaselineProbes(
        vauq_alpha=_number(vauq["alpha"], "baseline_probes.vauq.alpha", fail),
        vauq_entropies=steps["entropies"],
        vauq_masked_entropies=steps["masked_entropies"],
        vauq_no_image_entropies=steps["no_image_entropies"],
        layer_image_shares=_number_list(ratio["layer_image_shares"], "baseline_probes.attention_ratio."
                                        "layer_image_shares", fail),
        svar_layers=(layers[0], layers[1]),
        glsim_similarities=glsim,
        no_image_mass=_parse_yes_no_mass(raw["no_image"], fail, "baseline_probes.no_image"),
        vl_cluster_masses=masses,
        vl_answers=answers,
        vl_image_only_masses=image_only,
    )


# --------------------------------------------------------------------------------------------
# The method-v2 scores' inputs (semantic_entropy.method_probes): per POPE question,
#
#     "method_probes": {
#       "grounding": {"layers": [1, 2], "logit_lens_top": [[high to low] per layer],
#                     "similarity_top": [[high to low] per layer], ...},
#       "erased": [{"fraction": .1, "yes_mass": ..., "no_mass": ...}, ...],
#       "crops": [{"box": [l, t, r, b], "yes_mass": ..., "no_mass": ...}, ...], ...}
#     or null (not a POPE question: the measures are skipped)


@dataclass(frozen=True)
class MethodProbes:
    logit_lens_top: dict  # hidden-state index -> (k,) largest logit-lens log-probs of the object's tokens
    similarity_top: dict  # hidden-state index -> (k,) largest object-to-image-token cosines, high to low
    erased_masses: dict  # erased share of the image -> (yes_mass, no_mass)
    crop_masses: tuple  # (C,) (yes_mass, no_mass) per crop


def _descending(values: tuple[float, ...], what: str, fail) -> tuple[float, ...]:
    if not values or any(a < b for a, b in zip(values, values[1:])):
        fail(f"{what} must be a non-empty list sorted high to low")
    return values


def parse_method_probes(raw, fail) -> MethodProbes | None:
    """Validate a record's `method_probes` (None when absent or null)."""
    if raw is None:
        return None
    _object(raw, "method_probes", fail, ("grounding", "erased", "crops"))
    g = _object(raw["grounding"], "method_probes.grounding", fail, ("layers", "logit_lens_top", "similarity_top"))
    layers = g["layers"]
    if not (isinstance(layers, list) and layers and all(isinstance(x, int) and not isinstance(x, bool) for x in layers)):
        fail(f"method_probes.grounding.layers must be a list of layer indices, got {layers!r}")
    tops = {}
    for key in ("logit_lens_top", "similarity_top"):
        if not isinstance(g[key], list) or len(g[key]) != len(layers):
            fail(f"method_probes.grounding.{key} needs one list per layer ({len(layers)})")
        tops[key] = {layer: _descending(_number_list(v, f"method_probes.grounding.{key}[]", fail),
                                        f"method_probes.grounding.{key}[]", fail)
                     for layer, v in zip(layers, g[key])}
    if not isinstance(raw["erased"], list) or not isinstance(raw["crops"], list) or not raw["crops"]:
        fail("method_probes.erased and method_probes.crops must be lists, crops non-empty")
    erased = {_number(_object(e, "method_probes.erased[]", fail, ("fraction",))["fraction"],
                      "method_probes.erased[].fraction", fail): _parse_yes_no_mass(e, fail, "method_probes.erased[]")
              for e in raw["erased"]}
    crops = tuple(_parse_yes_no_mass(c, fail, "method_probes.crops[]") for c in raw["crops"])
    return MethodProbes(logit_lens_top=tops["logit_lens_top"], similarity_top=tops["similarity_top"],
                        erased_masses=erased, crop_masses=crops)


def parse_generations_record(raw: dict, source: str) -> QuestionGenerations:
    """Validate one stage-1 generations record (shape 1)."""
    if "question_id" not in raw:
        raise GenerationsError(f"{source}: missing field 'question_id'")
    question_id = raw["question_id"]
    fail = _failer(source, question_id)
    for field in ("category", "prompt", "greedy", "samples"):
        if field not in raw:
            fail(f"missing field {field!r}")
    if not isinstance(raw["prompt"], str):
        fail("prompt must be a string")
    samples_raw = raw["samples"]
    if not isinstance(samples_raw, list) or not samples_raw:
        fail("samples must be a non-empty list")
    samples = tuple(_parse_answer(s, f"samples[{i}]", fail) for i, s in enumerate(samples_raw))
    with_logprobs = [s.token_logprobs is not None for s in samples]
    if any(with_logprobs) and not all(with_logprobs):
        fail(f"samples[{with_logprobs.index(False)}] lacks token_logprobs while other samples have them")
    greedy = None if raw["greedy"] is None else _parse_answer(raw["greedy"], "greedy", fail)
    return QuestionGenerations(
        question_id=question_id,
        category=raw["category"],
        prompt=raw["prompt"],
        greedy=greedy,
        samples=samples,
        yes_no_mass=_parse_yes_no_mass(raw.get("first_token"), fail),
        p_true=_parse_p_true(raw.get("p_true"), fail),
        image_variant_masses=_parse_variants(raw.get("image_variants"), fail, "image_variants"),
        question_variant_masses=_parse_variants(raw.get("question_variants"), fail, "question_variants"),
        source=source,
        baseline_probes=parse_baseline_probes(raw.get("baseline_probes"), fail),
        method_probes=parse_method_probes(raw.get("method_probes"), fail),
    )


def parse_notes_record(key: str, raw, source: str) -> QuestionGenerations:
    """Validate one entry of a responses object (shape 2)."""
    if not isinstance(raw, dict):
        raise GenerationsError(f"{source}: entry must be an object, got {type(raw).__name__}")
    question_id = raw.get("question_id", int(key) if key.isdigit() else key)
    fail = _failer(source, question_id)
    if str(question_id) != key:
        fail(f"question_id {question_id!r} differs from its key {key!r}")
    for field in ("prompt", "responses"):
        if field not in raw:
            fail(f"missing field {field!r}")
    if not isinstance(raw["prompt"], str):
        fail("prompt must be a string")
    responses = raw["responses"]
    if not isinstance(responses, list) or not responses:
        fail("responses must be a non-empty list")
    for i, response in enumerate(responses):
        if not isinstance(response, str):
            fail(f"responses[{i}] must be a string, got {type(response).__name__}")
    metadata = raw.get("metadata") or {}
    return QuestionGenerations(
        question_id=question_id,
        category=raw.get("category", metadata.get("category") if isinstance(metadata, dict) else None),
        prompt=raw["prompt"],
        greedy=None,
        samples=tuple(Answer(text=r) for r in responses),
        p_true=_parse_p_true(raw.get("p_true"), fail),
        source=source,
    )


# --------------------------------------------------------------------------------------------
# Files


def detect_shape(path: str) -> str:
    """GENERATIONS_SHAPE if the first line is a record with a question_id, else NOTES_SHAPE."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                first = json.loads(line)
            except json.JSONDecodeError:
                return NOTES_SHAPE  # a pretty-printed single object
            if isinstance(first, dict) and "question_id" in first:
                return GENERATIONS_SHAPE
            return NOTES_SHAPE
    raise GenerationsError(f"{path}: empty generations file")


def _load_notes(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)
    except json.JSONDecodeError as e:
        raise GenerationsError(
            f"{path}:{e.lineno}: neither generations JSON lines (first line has no question_id) "
            f"nor one JSON object keyed by question id ({e.msg})"
        ) from None
    if not isinstance(entries, dict):
        raise GenerationsError(f"{path}: expected a JSON object keyed by question id, got {type(entries).__name__}")
    return entries


def count_questions(path: str) -> int:
    """Number of records (non-blank lines, or entries of a responses object), for a progress bar."""
    if detect_shape(path) == NOTES_SHAPE:
        return len(_load_notes(path))
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def iter_generations(path: str) -> Iterator[QuestionGenerations]:
    """Validated records of either shape, in file order; duplicate question_ids are an error."""
    first_seen: dict = {}

    def check_unique(record: QuestionGenerations) -> QuestionGenerations:
        key = record.question_id
        if key in first_seen:
            raise GenerationsError(f"{record.where()}: duplicate question_id (first at {first_seen[key]})")
        first_seen[key] = record.source
        return record

    if detect_shape(path) == NOTES_SHAPE:
        for key, raw in _load_notes(path).items():
            yield check_unique(parse_notes_record(key, raw, f"{path}[{key!r}]"))
        return
    for line_number, raw in iter_jsonl(path):
        yield check_unique(parse_generations_record(raw, f"{path}:{line_number}"))
