"""Stage 1's library: run batches through the exact tree sampler and build generations records.

A batch is either unshared (`run_batch`: one full prompt per question) or a batch of image
groups (`run_group_batch`: each image's prompt prefix computed once for all its questions).
Both halve the batch and retry on CUDA out-of-memory. `*_with_variants` add the exact
first-token distribution with each degraded image (one extra prefill per variant).
"""

from __future__ import annotations

import os
import pickle

import torch

from llava.eval.greedy_answers import llava_answer_record
from llava.jsonl_io import JsonlAppender, iter_jsonl
from llava.utils import hash_seed
from semantic_entropy.probes.image_variants import degrade_images, first_token_summary
from semantic_entropy.sampling.prefix_groups import Group
from semantic_entropy.sampling.sampler import Answer, SamplingSettings, sample_batch, sample_shared_prefix


def answer_record(answer: Answer, tokenizer) -> dict:
    return {
        "text": tokenizer.decode(answer.token_ids, skip_special_tokens=True).strip(),
        "token_ids": answer.token_ids,
        "token_logprobs": answer.token_logprobs,
        "token_entropies": answer.token_entropies,
        "ends_with_eos": answer.ends_with_eos,
    }


def generation_record(question, result, tokenizer, settings, base_seed, model_id, yes_ids, no_ids,
                      variant_probs: dict | None = None, conv_mode: str | None = None) -> dict:
    """One generations line; `variant_probs` maps image variant -> that question's (V,) first-token probs."""
    probs = result.first_token_probs
    record = {
        "question_id": question["question_id"],
        "category": question.get("category"),
        "image": question["image"],
        "prompt": question["text"],
        "model_id": model_id,
        "conv_mode": conv_mode,
        "greedy": answer_record(result.greedy, tokenizer),
        "samples": [answer_record(sample, tokenizer) for sample in result.samples],
        "first_token": {
            "yes_mass": float(probs[yes_ids].sum()),
            "no_mass": float(probs[no_ids].sum()),
            "top_token_id": int(probs.argmax()),
            "top_prob": float(probs.max()),
        },
        "distinct_answers": result.distinct_answers,
        "sampling": {
            "num_samples": settings.num_samples,
            "temperature": settings.temperature,
            "top_k": settings.top_k,
            "top_p": settings.top_p,
            "max_new_tokens": settings.max_new_tokens,
            "seed": base_seed,
            "question_seed": hash_seed(base_seed, question["question_id"]),
        },
    }
    if variant_probs:
        record["image_variants"] = {variant: first_token_summary(p, yes_ids, no_ids)
                                    for variant, p in variant_probs.items()}
    return record


def generation_answer_record(generation: dict) -> dict:
    """The greedy answer of a generations record in LLaVA's answer-file format."""
    return llava_answer_record(generation["question_id"], generation["prompt"], generation["greedy"]["text"],
                               generation["model_id"])


def backfill_answers(generations_file: str, answers_file: str, answered: set) -> set:
    """Answers for generations written before a crash cut the run between the two files."""
    missing = []
    if os.path.exists(generations_file):
        missing = [r for _, r in iter_jsonl(generations_file) if r["question_id"] not in answered]
    if missing:
        with JsonlAppender(answers_file) as out:
            for record in missing:
                out.write(generation_answer_record(record))
    return answered | {r["question_id"] for r in missing}


def question_generators(questions, seed: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(hash_seed(seed, q["question_id"])) for q in questions]


def halves(items: list) -> list[list]:
    return [items[: len(items) // 2], items[len(items) // 2 :]]


@torch.inference_mode()
def run_batch(model, batch, settings, seed, eos_token_id):
    """(questions, results) of one unshared batch; on CUDA out-of-memory, the same questions in halves."""
    try:
        features = model.encode_images(batch["pixel_values"])
        embeds, mask, positions = model.embed_multimodal(batch["input_ids"], features)
        generators = question_generators(batch["questions"], seed)
        return batch["questions"], sample_batch(model, embeds, mask, positions, generators, settings, eos_token_id)
    except torch.cuda.OutOfMemoryError:
        if len(batch["questions"]) == 1:
            raise
        torch.cuda.empty_cache()
        print(f"CUDA out of memory at batch size {len(batch['questions'])}; retrying in halves")
        questions, results = [], []
        for part in halves(list(range(len(batch["questions"])))):
            sub = {key: [value[i] for i in part] for key, value in batch.items() if key != "pixel_values"}
            sub["pixel_values"] = batch["pixel_values"][part]
            q, r = run_batch(model, sub, settings, seed, eos_token_id)
            questions += q
            results += r
        return questions, results


@torch.inference_mode()
def run_group_batch(model, groups, pixel_values, settings, seed, eos_token_id):
    """(questions, results) of one batch of image groups, each image's prefix computed once."""
    try:
        features = model.encode_images(pixel_values)  # (G, 576, H)
        prefixes = [torch.tensor(g.prefix_ids) for g in groups]
        embeds, mask, positions = model.embed_multimodal(prefixes, features)
        suffixes = [(row, ids) for row, g in enumerate(groups) for ids in g.suffix_ids]
        questions = [q for g in groups for q in g.questions]
        results = sample_shared_prefix(model, embeds, mask, positions, suffixes,
                                       question_generators(questions, seed), settings, eos_token_id)
        return questions, results
    except torch.cuda.OutOfMemoryError:
        parts = split_groups_in_halves(groups, pixel_values)
        torch.cuda.empty_cache()
        print(f"CUDA out of memory on {sum(len(g.questions) for g in groups)} questions; retrying in halves")
        questions, results = [], []
        for part_groups, part_pixels in parts:
            q, r = run_group_batch(model, part_groups, part_pixels, settings, seed, eos_token_id)
            questions += q
            results += r
        return questions, results


# The degraded passes: exact first-token distribution only (prefill + question extension, no samples).
FIRST_TOKEN_ONLY = SamplingSettings(num_samples=0, max_new_tokens=1)


def image_variant_probs(run_one, pixel_values, image_names, variants, seed, question_ids) -> list[dict]:
    """Per question (in `question_ids` order): variant -> (V,) first-token probs with that degraded image.

    `run_one(pixels, settings)` is the batch's own fast path (run_group_batch or run_batch bound to
    the batch), so each variant costs exactly what one more greedy first token would: one prefill.
    """
    per_question = [{} for _ in question_ids]
    for variant in variants:
        questions, results = run_one(degrade_images(variant, pixel_values, image_names, seed), FIRST_TOKEN_ONLY)
        if [q["question_id"] for q in questions] != list(question_ids):
            raise RuntimeError(f"image variant {variant}: questions came back in another order")
        for slot, result in zip(per_question, results):
            slot[variant] = result.first_token_probs
    return per_question


def run_group_batch_with_variants(model, groups, pixel_values, settings, seed, eos_token_id, variants=()):
    """run_group_batch plus, per question, the first-token probs with each degraded image."""
    questions, results = run_group_batch(model, groups, pixel_values, settings, seed, eos_token_id)
    run_one = lambda pixels, s: run_group_batch(model, groups, pixels, s, seed, eos_token_id)  # noqa: E731
    names = [g.image for g in groups]
    ids = [q["question_id"] for q in questions]
    return questions, results, image_variant_probs(run_one, pixel_values, names, variants, seed, ids)


def run_batch_with_variants(model, batch, settings, seed, eos_token_id, variants=()):
    """run_batch plus, per question, the first-token probs with each degraded image."""
    questions, results = run_batch(model, batch, settings, seed, eos_token_id)
    run_one = lambda pixels, s: run_batch(model, {**batch, "pixel_values": pixels}, s, seed, eos_token_id)  # noqa: E731
    names = [q["image"] for q in batch["questions"]]
    ids = [q["question_id"] for q in questions]
    return questions, results, image_variant_probs(run_one, batch["pixel_values"], names, variants, seed, ids)


def split_groups_in_halves(groups, pixel_values):
    """Two smaller batches with the same questions: halves of the groups, or of a lone group's questions."""
    if len(groups) > 1:
        cut = len(groups) // 2
        return [(groups[:cut], pixel_values[:cut]), (groups[cut:], pixel_values[cut:])]
    group = groups[0]
    if len(group.questions) == 1:
        raise torch.cuda.OutOfMemoryError("one question does not fit on the GPU")
    cut = len(group.questions) // 2
    return [([Group(group.image, group.prefix_ids, group.questions[a:b], group.suffix_ids[a:b])], pixel_values)
            for a, b in ((0, cut), (cut, len(group.questions)))]


def write_pkl_mirror(generations_file: str) -> str:
    """A pickle of the generations with numpy arrays, for users who want arrays (we only write it)."""
    import numpy as np

    mirror = {}
    for _, record in iter_jsonl(generations_file):
        for answer in [record["greedy"], *record["samples"]]:
            for key in ("token_ids", "token_logprobs", "token_entropies"):
                answer[key] = np.asarray(answer[key])
        mirror[record["question_id"]] = record
    path = os.path.splitext(generations_file)[0] + ".pkl"
    with open(path + ".tmp", "wb") as f:
        pickle.dump(mirror, f)
    os.replace(path + ".tmp", path)
    return path
