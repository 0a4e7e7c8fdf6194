"""Stage 1: greedy answer plus N multinomial samples per question, with token log-probs.

python -m semantic_entropy.model_vqa_loader --model-path M --question-file Q --image-folder I \
    --answers-file A --generations-file G --temperature 0 --conv-mode vicuna_v1 \
    [--num-samples 10 --sampling-temperature 1.0 --top_k K --top_p P --seed 0 --batch-size 16]
    [--image-variants mean,blur,noise]

Writes, in question order, one line per question:
- A: LLaVA's greedy answer records (what `llava.eval.model_vqa_loader` writes; eval_pope reads it);
- G: the generations (docs/design.md): greedy answer and N samples, each with text, token ids,
  untempered token log-probs and entropies (EOS included and flagged), the first-token yes/no
  probability mass, the sampling settings and the question's seed;
- with --image-variants: per question, the exact first-token yes/no mass with each degraded
  image (`image_variants` field; see `semantic_entropy.probes.image_variants`). Cost: one extra
  prefill (vision tower + prompt) per variant per batch row: with prefix sharing that is one
  extra image prefill per image per variant plus one question-extension pass; unshared, one
  extra full-prompt prefill per question per variant. No samples are drawn on them;
- A.manifest.json and G.manifest.json: the run's settings, inputs and versions; with --save-pkl
  also G.pkl (arrays).

`--temperature` is LLaVA's flag: 0 (greedy) as POPE scripts pass it. The greedy answer is always
greedy; samples are drawn at `--sampling-temperature` (default 1.0). A `--temperature` above 0
given without `--sampling-temperature` sets the samples' temperature instead. Rerunning resumes;
a rerun with other settings (model, question file, conv mode, samples, temperatures, seed,
variants, ...) is refused before the model loads, naming what differs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from tqdm import tqdm

from llava.cli import add_model_args, add_question_args, load_model_from_args, model_settings, new_parser, \
    positive_int, run_main
from llava.eval.vqa_data import QuestionDataset, batches, questions_of_chunk
from llava.mm_utils import get_model_name_from_path
from llava.utils import loader_workers, resolve_device
from semantic_entropy.probes.image_variants import parse_image_variants, variant_settings
from semantic_entropy.runs import distributed
from semantic_entropy.runs.record_output import RecordOutput, RunSpec, finish_outputs, open_outputs
from semantic_entropy.sampling.answer_tokens import yes_no_token_ids
from semantic_entropy.sampling.prefix_groups import group_batches, group_questions, plan_batches
from semantic_entropy.sampling.sampler import SamplingSettings
from semantic_entropy.sampling.stage1 import (backfill_answers, generation_answer_record, generation_record,
                                              run_batch_with_variants, run_group_batch_with_variants,
                                              write_pkl_mirror)

TOOL = "semantic_entropy.model_vqa_loader"


def build_parser():
    parser = new_parser(__doc__)
    add_model_args(parser)
    # Questions per batch. Unshared, 20 questions of a 7B model peak near 21 GiB (a 24 GB card);
    # shared, 128 questions over at most 16 images stay in the same budget.
    add_question_args(parser, batch_unit="questions per batch; None = 128 with prefix sharing, 20 without",
                      batch_default=None)
    parser.add_argument("--generations-file", default=None, help="None = <answers-file stem>.generations.jsonl")
    parser.add_argument("--num-samples", type=positive_int, default=10, help="sampled answers per question")
    parser.add_argument("--temperature", type=float, default=0.0, help="LLaVA's flag; 0 = greedy answers (see above)")
    parser.add_argument("--sampling-temperature", type=float, default=None,
                        help="temperature of the samples; None = 1.0 (or --temperature when it is above 0)")
    parser.add_argument("--top-p", "--top_p", dest="top_p", type=float, default=None,
                        help="nucleus filtering of the samples (None = off)")
    parser.add_argument("--top-k", "--top_k", dest="top_k", type=int, default=None,
                        help="top-k filtering of the samples (None = off)")
    parser.add_argument("--num-beams", "--num_beams", dest="num_beams", type=int, default=1,
                        help="only 1 (beam search is not supported)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; each question's seed derives from it and its id")
    parser.add_argument("--save-pkl", action="store_true", help="also write a .pkl mirror with numpy arrays")
    parser.add_argument("--prefix-sharing", action=argparse.BooleanOptionalAction, default=True,
                        help="compute each image's prompt prefix once for all its questions")
    parser.add_argument("--images-per-batch", type=positive_int, default=16,
                        help="with prefix sharing: images (prefixes) per batch")
    parser.add_argument("--image-variants", type=parse_image_variants, default=(), metavar="LIST",
                        help="comma list of degraded images (mean, blur, noise) whose exact first-token yes/no "
                             "mass is stored per question; one extra prefill per variant")
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


def sampling_settings(args) -> SamplingSettings:
    return SamplingSettings(args.num_samples, resolve_sampling_temperature(args), args.top_k, args.top_p,
                            args.max_new_tokens)


def run_spec(args, world_size: int) -> RunSpec:
    """Everything that changes the records is checked on resume; batching and devices are not."""
    return RunSpec(
        tool=TOOL,
        settings={**model_settings(args), "image_folder": os.path.abspath(args.image_folder),
                  "conv_mode": args.conv_mode, "num_chunks": args.num_chunks, "chunk_idx": args.chunk_idx,
                  **{f"sampling_{k}": v for k, v in vars(sampling_settings(args)).items()},
                  "seed": args.seed, "image_variants": variant_settings(args.image_variants)},
        inputs={"question_file": args.question_file},
        execution={"device": args.device, "batch_size": resolve_batch_size(args),
                   "prefix_sharing": args.prefix_sharing, "images_per_batch": args.images_per_batch,
                   "processes": world_size},
    )


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
    settings = sampling_settings(args)
    questions = questions_of_chunk(args.question_file, args.num_chunks, args.chunk_idx)
    order = {q["question_id"]: rank for rank, q in enumerate(questions)}
    spec = run_spec(args, info.world_size)
    answers_out = RecordOutput(args.answers_file, spec, info)
    generations_out = RecordOutput(generations_path(args), spec, info)
    with open_outputs([generations_out, answers_out], info):
        if info.is_main:  # a crash between the two writes left answers missing: write them now
            backfill_answers(generations_out.path, answers_out.path, answers_out.done)
        distributed.barrier(info)
        answered = answers_out.load_done()
        pending = [q for q in questions if q["question_id"] not in generations_out.done]
        if len(pending) < len(questions) and info.is_main:
            print(f"resuming: {len(questions) - len(pending)} of {len(questions)} questions already done")
        tokenizer, model, image_processor, _ = load_model_from_args(args)
        yes_ids, no_ids = yes_no_token_ids(tokenizer, model.scored_vocab_size)
        elapsed = write_generations(args, info, settings, pending, tokenizer, model, image_processor, yes_ids, no_ids,
                                    generations_out, answers_out, answered)
        details = {"yes_token_ids": yes_ids, "no_token_ids": no_ids}
        counts = finish_outputs([generations_out, answers_out], info, order, details)
    if info.is_main:
        if pending:
            print(f"stage 1: {len(pending)} questions in {elapsed:.1f} s ({len(pending) / elapsed:.1f} questions/s) "
                  f"on {info.world_size} process(es)")
        if args.save_pkl:
            print(f"wrote {write_pkl_mirror(generations_out.path)}")
        print(f"wrote {generations_out.path} ({counts[0]} questions) and {answers_out.path}")


def write_generations(args, info, settings, pending, tokenizer, model, image_processor, yes_ids, no_ids,
                      generations_out, answers_out, answered) -> float:
    """Sample this rank's share of the pending questions into its files; returns the seconds spent."""
    num_workers = loader_workers(args.num_workers, model.device)
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
    with generations_out.appender() as gen_file, answers_out.appender() as answer_file, \
            tqdm(total=count, unit="q", desc=f"rank {info.rank}" if info.world_size > 1 else None) as bar:
        for batch in loader:
            batch_questions, results, variant_probs = compute(batch)
            for question, result, variants in zip(batch_questions, results, variant_probs):
                record = generation_record(question, result, tokenizer, settings, args.seed, model_id, yes_ids, no_ids,
                                           variants, args.conv_mode)
                gen_file.write(record)  # generations first: a crash between the writes is backfilled
                if question["question_id"] not in answered:
                    answer_file.write(generation_answer_record(record))
                distinct += result.distinct_answers
            bar.update(len(batch_questions))
            bar.set_postfix(distinct_answers=f"{distinct / max(bar.n, 1):.2f}")
    distributed.barrier(info)
    return time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(run_main(main))
