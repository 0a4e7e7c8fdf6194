"""Stage 1: greedy answer plus N multinomial samples per question, with token log-probs.

python -m semantic_entropy.model_vqa_loader --model-path M --question-file Q --image-folder I \
    --answers-file A --generations-file G --temperature 0 --conv-mode vicuna_v1 \
    [--num-samples 10 --sampling-temperature 1.0 --top_k K --top_p P --seed 0 --batch-size 16]
    [--image-variants mean,blur,noise]

Writes, in question order, one line per question:
- A: LLaVA's greedy answer records (what `llava.eval.model_vqa_loader` writes; eval_pope reads it);
- G: the generations (DESIGN section 3): greedy answer and N samples, each with text, token ids,
  untempered token log-probs and entropies (EOS included and flagged), the first-token yes/no
  probability mass, the sampling settings and the question's seed;
- with --image-variants: per question, the exact first-token yes/no mass with each degraded
  image (`image_variants` field; see `semantic_entropy.probes.image_variants`). Cost: one extra
  prefill (vision tower + prompt) per variant per batch row: with prefix sharing that is one
  extra image prefill per image per variant plus one question-extension pass; unshared, one
  extra full-prompt prefill per question per variant. No samples are drawn on them;
- G.manifest.json: the run's settings and versions; with --save-pkl also G.pkl (arrays).

`--temperature` is LLaVA's flag: 0 (greedy) as POPE scripts pass it. The greedy answer is always
greedy; samples are drawn at `--sampling-temperature` (default 1.0). A `--temperature` above 0
given without `--sampling-temperature` sets the samples' temperature instead. Rerunning resumes.
"""

from __future__ import annotations

import argparse
import os
import pickle
import time

import torch
from tqdm import tqdm

from llava.eval.model_vqa_loader import add_model_args, add_question_args, hash_seed, load_model_from_args
from llava.eval.vqa_data import QuestionDataset, batches, get_chunk, load_questions
from llava.jsonl_io import JsonlAppender, completed_ids, iter_jsonl
from llava.mm_utils import get_model_name_from_path
from llava.utils import short_uuid, write_manifest
from llava.model.builder import resolve_device
from semantic_entropy.runs import distributed
from semantic_entropy.sampling.answer_tokens import yes_no_token_ids
from semantic_entropy.probes.image_variants import degrade_images, first_token_summary, parse_image_variants, variant_settings
from semantic_entropy.sampling.prefix_groups import Group, group_batches, group_questions, plan_batches
from semantic_entropy.sampling.sampler import Answer, SamplingSettings, sample_batch, sample_shared_prefix


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    add_question_args(parser)
    parser.add_argument("--generations-file", type=str, default=None, help="default: <answers-file stem>.generations.jsonl")
    parser.add_argument("--num-samples", type=int, default=10)
    parser.add_argument("--temperature", type=float, default=0.0, help="LLaVA's flag; 0 = greedy answers (see above)")
    parser.add_argument("--sampling-temperature", type=float, default=None, help="temperature of the samples (default 1.0)")
    parser.add_argument("--top_p", type=float, default=None, help="nucleus filtering of the samples (default off)")
    parser.add_argument("--top_k", type=int, default=None, help="top-k filtering of the samples (default off)")
    parser.add_argument("--num_beams", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="base seed; each question's seed derives from it and its id")
    parser.add_argument("--save-pkl", action="store_true", help="also write a .pkl mirror with numpy arrays")
    parser.add_argument("--prefix-sharing", action=argparse.BooleanOptionalAction, default=True,
                        help="compute each image's prompt prefix once for all its questions (default on)")
    parser.add_argument("--images-per-batch", type=int, default=16, help="with prefix sharing: prefixes per batch")
    parser.add_argument("--image-variants", type=parse_image_variants, default=(), metavar="LIST",
                        help="comma list of degraded images (mean, blur, noise) whose exact first-token yes/no "
                             "mass is stored per question (default: none); one extra prefill per variant")
    # Questions per batch. Unshared, 20 questions of a 7B model peak near 21 GiB (a 24 GB card);
    # shared, 128 questions over at most 16 images stay in the same budget.
    parser.set_defaults(batch_size=None)
    return parser


def resolve_batch_size(args) -> int:
    if args.batch_size is not None:
        return args.batch_size
    return 128 if args.prefix_sharing else 20


def resolve_sampling_temperature(args) -> float:
    if args.sampling_temperature is not None:
        return args.sampling_temperature
    return args.temperature if args.temperature > 0 else 1.0


def generations_path(args) -> str:
    if args.generations_file:
        return os.path.expanduser(args.generations_file)
    stem, _ = os.path.splitext(os.path.expanduser(args.answers_file))
    return stem + ".generations.jsonl"


def answer_record(answer: Answer, tokenizer) -> dict:
    return {
        "text": tokenizer.decode(answer.token_ids, skip_special_tokens=True).strip(),
        "token_ids": answer.token_ids,
        "token_logprobs": answer.token_logprobs,
        "token_entropies": answer.token_entropies,
        "ends_with_eos": answer.ends_with_eos,
    }


def generation_record(question, result, tokenizer, settings, base_seed, model_id, yes_ids, no_ids,
                      variant_probs: dict | None = None) -> dict:
    """One generations line; `variant_probs` maps image variant -> that question's (V,) first-token probs."""
    probs = result.first_token_probs
    record = {
        "question_id": question["question_id"],
        "category": question.get("category"),
        "image": question["image"],
        "prompt": question["text"],
        "model_id": model_id,
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


def llava_answer_record(generation: dict) -> dict:
    """The greedy answer in LLaVA's answer-file format."""
    return {
        "question_id": generation["question_id"],
        "prompt": generation["prompt"],
        "text": generation["greedy"]["text"],
        "answer_id": short_uuid(),
        "model_id": generation["model_id"],
        "metadata": {},
    }


def backfill_answers(generations_file: str, answers_file: str, answered: set) -> set:
    """Answers for generations written before a crash cut the run between the two files."""
    missing = []
    if os.path.exists(generations_file):
        missing = [r for _, r in iter_jsonl(generations_file) if r["question_id"] not in answered]
    if missing:
        with JsonlAppender(answers_file) as out:
            for record in missing:
                out.write(llava_answer_record(record))
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


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    if args.num_beams != 1:
        raise NotImplementedError("beam search is not supported")
    info = distributed.setup(resolve_device(args.device))
    args.device = info.device
    try:
        run(args, info)
    finally:
        distributed.teardown(info)


def run(args, info: distributed.RankInfo) -> None:
    settings = SamplingSettings(args.num_samples, resolve_sampling_temperature(args), args.top_k, args.top_p,
                                args.max_new_tokens)
    answers_file, generations_file = os.path.expanduser(args.answers_file), generations_path(args)
    tokenizer, model, image_processor, _ = load_model_from_args(args)
    yes_ids, no_ids = yes_no_token_ids(tokenizer, model.scored_vocab_size)
    questions = get_chunk(load_questions(os.path.expanduser(args.question_file)), args.num_chunks, args.chunk_idx)
    order = {q["question_id"]: rank for rank, q in enumerate(questions)}
    if info.is_main:
        write_manifest(generations_file + ".manifest.json", vars(args), model_path=os.path.abspath(args.model_path),
                       sampling=vars(settings), yes_token_ids=yes_ids, no_token_ids=no_ids,
                       image_variants=variant_settings(args.image_variants),
                       world_size=info.world_size)
        for path in (generations_file, answers_file):  # parts a crashed multi-process run left behind
            completed_ids(path)  # cuts a line a crash left half-written
            if distributed.leftover_parts(path):
                distributed.merge_parts_into(path, distributed.leftover_parts(path), order)
        backfill_answers(generations_file, answers_file, completed_ids(answers_file))
    distributed.barrier(info)
    generated, answered = completed_ids(generations_file), completed_ids(answers_file)
    pending = [q for q in questions if q["question_id"] not in generated]
    if len(pending) < len(questions) and info.is_main:
        print(f"resuming: {len(questions) - len(pending)} of {len(questions)} questions already done")

    num_workers = args.num_workers if args.num_workers is not None else (4 if model.device.type == "cuda" else 0)
    batch_size = resolve_batch_size(args)
    model_id = get_model_name_from_path(args.model_path)
    # Batches are planned over all pending work, then dealt to the ranks: every question meets the
    # same batch (same padding, same kernels) however many processes run, so outputs match one process.
    if args.prefix_sharing:
        planned = plan_batches(group_questions(pending, tokenizer, args.conv_mode), batch_size, args.images_per_batch)
        planned = distributed.shard(planned, info)
        loader = group_batches(planned, args.image_folder, image_processor, model.config, num_workers)
        count = sum(len(g.questions) for batch in planned for g in batch)
        compute = lambda b: run_group_batch_with_variants(  # noqa: E731
            model, b["groups"], b["pixel_values"], settings, args.seed, tokenizer.eos_token_id, args.image_variants)
    else:
        planned = distributed.shard([pending[i : i + batch_size] for i in range(0, len(pending), batch_size)], info)
        mine = [q for batch in planned for q in batch]
        dataset = QuestionDataset(mine, args.image_folder, tokenizer, image_processor, model.config, args.conv_mode)
        loader = batches(dataset, batch_size, num_workers)  # only the globally last batch can be short
        count = len(mine)
        compute = lambda b: run_batch_with_variants(  # noqa: E731
            model, b, settings, args.seed, tokenizer.eos_token_id, args.image_variants)
    distinct = 0
    distributed.barrier(info)
    started = time.perf_counter()
    gen_path, ans_path = distributed.part_path(generations_file, info), distributed.part_path(answers_file, info)
    with JsonlAppender(gen_path) as gen_out, JsonlAppender(ans_path) as ans_out, \
            tqdm(total=count, unit="q", desc=f"rank {info.rank}" if info.world_size > 1 else None) as bar:
        for batch in loader:
            batch_questions, results, variant_probs = compute(batch)
            for question, result, variants in zip(batch_questions, results, variant_probs):
                record = generation_record(question, result, tokenizer, settings, args.seed, model_id, yes_ids, no_ids,
                                           variants)
                gen_out.write(record)  # generations first: a crash between the writes is backfilled
                if question["question_id"] not in answered:
                    ans_out.write(llava_answer_record(record))
                distinct += result.distinct_answers
            bar.update(len(batch_questions))
            bar.set_postfix(distinct_answers=f"{distinct / max(bar.n, 1):.2f}")
    distributed.barrier(info)
    if info.is_main and pending:
        elapsed = time.perf_counter() - started
        print(f"stage 1: {len(pending)} questions in {elapsed:.1f} s ({len(pending) / elapsed:.1f} questions/s) "
              f"on {info.world_size} process(es)")
    if info.is_main:
        # Batches follow images and ranks, not the file: put the finished files in question order.
        for path in (generations_file, answers_file):
            distributed.merge_parts_into(path, distributed.leftover_parts(path), order)
        if args.save_pkl:
            print(f"wrote {write_pkl_mirror(generations_file)}")
    distributed.barrier(info)


if __name__ == "__main__":
    main()
