"""Time stage 1 and then the baseline pass (all published detectors together) on POPE-shaped work.

GPU, LLaVA-1.5-7B shape (random weights, real cost; checkpoint and POPE-named images from
scripts/make_random_llava.py):

    PYTHONPATH=. python scripts/make_random_llava.py --output-dir /tmp/llava7b \\
        --pope-dir .bench_data/pope_coco --tokenizer-dir .bench_data/llama2_tokenizer
    PYTHONPATH=. python scripts/bench_baselines.py --model-path /tmp/llava7b/llava-v1.5-7b-random \\
        --question-file /tmp/llava7b/llava_pope_test.jsonl --image-folder /tmp/llava7b/images \\
        --num-images 100 --device cuda --output-json /tmp/bench_baselines.json

CPU smoke test on the embedded ShapesPOPE demo model: --tiny.

One model, loaded once; each timed phase runs over the same questions after a warm-up batch:
stage 1 as `semantic_entropy.model_vqa_loader` runs it (prefix-shared tree sampler, greedy +
--num-samples samples), stage 1's degraded-image passes (--image-variants, as
scripts/method_study.sh runs it), and `semantic_entropy.baseline_probes`'s batches (the
greedy answers from the stage-1 phase). Image loading is included in every phase. Prints the
seconds and the ratios baselines / stage 1, with and without the variants.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from llava.jsonl_io import read_jsonl  # noqa: E402
from llava.model.builder import load_pretrained_model  # noqa: E402
from semantic_entropy import baseline_probes  # noqa: E402
from semantic_entropy.probes.baseline_inputs import BlurredGroupBatchDataset, question_inputs  # noqa: E402
from semantic_entropy.probes.baselines import PhaseClock, baseline_batch  # noqa: E402
from semantic_entropy.sampling.answer_tokens import yes_no_token_ids  # noqa: E402
from semantic_entropy.sampling.prefix_groups import group_batches, group_questions, plan_batches  # noqa: E402
from semantic_entropy.sampling.sampler import SamplingSettings  # noqa: E402
from semantic_entropy.sampling.stage1 import run_group_batch, run_group_batch_with_variants  # noqa: E402

DEMO = {"model_path": "playground/models/llava-v1.5-shapes-tiny",
        "question_file": "playground/data/eval/shapes_pope/llava_pope_test.jsonl",
        "image_folder": "playground/data/eval/shapes_pope/images"}


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


@torch.inference_mode()
def forward_floor(model, tokens_per_row: int, device, rows: int = 64, repeats: int = 3) -> dict:
    """Tokens/s of a plain causal forward (no padding mask, logits of the last position only)."""
    width = model.config.text_config.hidden_size
    embeds = torch.randn(rows, tokens_per_row, width, device=device, dtype=model.text_dtype)  # (B, T, D)
    language = model.model.language_model
    language(inputs_embeds=embeds)  # warm-up
    seconds = timed(lambda: [language(inputs_embeds=embeds) for _ in range(repeats)], device)
    return {"rows": rows, "tokens_per_row": tokens_per_row, "tokens_per_s": repeats * rows * tokens_per_row / seconds}


def write_profile(run, device, path: str) -> None:
    """torch.profiler's tables of one run: by device time, and by host time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=False) as profiler:
        run()
        synchronize(device)
    averages = profiler.key_averages()
    with open(path, "w") as f:
        if device.type == "cuda":
            f.write(averages.table(sort_by="self_cuda_time_total", row_limit=40, max_name_column_width=70))
        f.write("\n")
        f.write(averages.table(sort_by="self_cpu_time_total", row_limit=40, max_name_column_width=70))
    print(f"profile: {path}")


def first_images(questions: list[dict], count: int | None) -> list[dict]:
    images = list(dict.fromkeys(q["image"] for q in questions))
    keep = set(images[:count]) if count else set(images)
    return [q for q in questions if q["image"] in keep]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test on the embedded ShapesPOPE demo model")
    parser.add_argument("--model-path", default=None, help="checkpoint (scripts/make_random_llava.py's for 7B)")
    parser.add_argument("--question-file", default=None, help="LLaVA POPE question file")
    parser.add_argument("--image-folder", default=None, help="the questions' images")
    parser.add_argument("--num-images", type=int, default=None, help="only the first N images' questions")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--dtype", default="auto", help="model dtype (auto: float16 on CUDA)")
    parser.add_argument("--num-samples", type=int, default=10, help="stage 1's samples per question")
    parser.add_argument("--stage1-batch-size", type=int, default=128, help="stage 1's questions per batch")
    parser.add_argument("--stage1-images-per-batch", type=int, default=16, help="stage 1's images per batch")
    parser.add_argument("--image-variants", default="mean,blur,noise", help="stage 1's degraded images")
    parser.add_argument("--batch-size", type=int, default=None, help="baseline pass questions per batch (its default)")
    parser.add_argument("--images-per-batch", type=int, default=None, help="baseline pass images per batch (its default)")
    parser.add_argument("--output-json", default=None, help="write the timings here")
    parser.add_argument("--phases", action="store_true",
                        help="time the pass again, synchronised, per phase (and the data loading around it)")
    parser.add_argument("--floor-tokens", type=int, default=0,
                        help="with --phases: also time a plain causal forward of 64 rows of this many tokens "
                             "(the model's throughput without masks, trees or captures)")
    parser.add_argument("--profile-batches", type=int, default=0,
                        help="also run torch.profiler over this many baseline batches and write its tables "
                             "beside --output-json")
    parser.add_argument("--workers", type=int, default=None, help="image loaders (default: 4 on CUDA, 0 on CPU)")
    args = parser.parse_args(argv)
    if args.tiny:
        for key, value in DEMO.items():
            setattr(args, key, getattr(args, key) or value)
        args.device = "cpu" if args.device == "auto" else args.device
        args.num_images = args.num_images or 12
    if not (args.model_path and args.question_file and args.image_folder):
        parser.error("--model-path, --question-file and --image-folder are needed (or --tiny)")

    tokenizer, model, processor, _ = load_pretrained_model(args.model_path, device=args.device, dtype=args.dtype)
    device = model.device
    questions = first_images(read_jsonl(args.question_file), args.num_images)
    yes_ids, no_ids = yes_no_token_ids(tokenizer, model.scored_vocab_size)
    eos = tokenizer.eos_token_id
    workers = args.workers if args.workers is not None else (4 if device.type == "cuda" else 0)
    settings = SamplingSettings(num_samples=args.num_samples, temperature=1.0, max_new_tokens=128)
    variants = tuple(v for v in args.image_variants.split(",") if v)
    pass_args = baseline_probes.build_parser().parse_args(
        ["--model-path", args.model_path, "--image-folder", args.image_folder, "--generations-file", "G",
         "--output-file", "O", *(["--batch-size", str(args.batch_size)] if args.batch_size else []),
         *(["--images-per-batch", str(args.images_per_batch)] if args.images_per_batch else [])])
    baseline_settings = baseline_probes.settings_from_args(pass_args, model.config.text_config.num_hidden_layers)
    planned = plan_batches(group_questions(questions, tokenizer, "vicuna_v1"), args.stage1_batch_size,
                           args.stage1_images_per_batch)
    baseline_planned = plan_batches(group_questions(questions, tokenizer, "vicuna_v1"), pass_args.batch_size,
                                    pass_args.images_per_batch)
    greedy: dict = {}

    def stage1(chosen_variants, keep_answers=False, batches=planned):
        for batch in group_batches(batches, args.image_folder, processor, model.config, workers):
            if chosen_variants:
                qs, results, _ = run_group_batch_with_variants(model, batch["groups"], batch["pixel_values"], settings,
                                                               0, eos, chosen_variants)
            else:
                qs, results = run_group_batch(model, batch["groups"], batch["pixel_values"], settings, 0, eos)
            if keep_answers:
                greedy.update({q["question_id"]: r.greedy.token_ids for q, r in zip(qs, results)})

    clock = PhaseClock(device) if args.phases else None

    def baselines(batches=baseline_planned, clock=None):
        dataset = BlurredGroupBatchDataset(batches, args.image_folder, processor, model.config,
                                           baseline_settings.blur_radii)
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers)
        for batch in loader:
            groups = batch["groups"]
            inputs = [question_inputs({"question_id": q["question_id"], "prompt": q["text"],
                                       "greedy": {"token_ids": greedy[q["question_id"]]}},
                                      g.prefix_ids, suffix, tokenizer, "vicuna_v1")
                      for g in groups for q, suffix in zip(g.questions, g.suffix_ids)]
            baseline_batch(model, groups, batch["pixel_values"], batch["blurred_pixel_values"], inputs,
                           baseline_settings, yes_ids, no_ids, eos, clock)

    # warm-up on the first batch of each phase (kernels, allocator); answers for the baselines
    stage1(variants, keep_answers=True, batches=planned[:1])
    stage1((), keep_answers=True)
    baselines(baseline_planned[:1])
    seconds = {"stage1": timed(lambda: stage1(()), device)}
    if variants:
        seconds["stage1_with_variants"] = timed(lambda: stage1(variants), device)
    # with --phases the device is synchronised around each phase (a few times per batch)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds["baselines"] = timed(lambda: baselines(clock=clock), device)
    peak_gib = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    if args.profile_batches and args.output_json:
        write_profile(lambda: baselines(baseline_planned[: args.profile_batches]), device,
                      os.path.splitext(args.output_json)[0] + "_profile.txt")
    n = len(questions)
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "questions": n, "images": len({q["image"] for q in questions}),
        "settings": {"num_samples": args.num_samples, "image_variants": list(variants),
                     "stage1_batch_size": args.stage1_batch_size,
                     "stage1_images_per_batch": args.stage1_images_per_batch,
                     "baseline_batch_size": pass_args.batch_size, "baseline_images_per_batch": pass_args.images_per_batch,
                     "dtype": str(model.text_dtype),
                     "vauq_mask_ratio": baseline_settings.vauq_mask_ratio,
                     "blur_radii": list(baseline_settings.blur_radii)},
        "seconds": seconds,
        "baselines_peak_gib": peak_gib,
        "questions_per_s": {k: n / v for k, v in seconds.items()},
        "baselines / stage1": seconds["baselines"] / seconds["stage1"],
    }
    if variants:
        report["baselines / stage1_with_variants"] = seconds["baselines"] / seconds["stage1_with_variants"]
    if clock is not None:
        report["phases"] = {name: {"seconds": value, "tokens": clock.tokens[name],
                                   "tokens_per_s": clock.tokens[name] / value if clock.tokens[name] else None}
                            for name, value in clock.seconds.items()}
        report["phases"]["outside the batches (data loading)"] = {
            "seconds": seconds["baselines"] - sum(clock.seconds.values())}
        if args.floor_tokens:
            report["forward_floor"] = forward_floor(model, args.floor_tokens, device)
        for name, row in report["phases"].items():
            rate = f"{row['tokens_per_s']:10.0f} tokens/s" if row.get("tokens_per_s") else ""
            print(f"  {name:36s} {row['seconds']:8.2f} s {rate}")
        if args.floor_tokens:
            print(f"  plain causal forward, {args.floor_tokens} tokens/row: "
                  f"{report['forward_floor']['tokens_per_s']:.0f} tokens/s")
    for name, value in seconds.items():
        print(f"{name:22s} {value:8.2f} s  {n / value:8.1f} q/s")
    print(f"baselines / stage 1: {report['baselines / stage1']:.2f}x"
          + (f"; the pass's peak memory {peak_gib:.1f} GiB" if peak_gib is not None else ""))
    if variants:
        print(f"baselines / stage 1 with --image-variants {','.join(variants)}: "
              f"{report['baselines / stage1_with_variants']:.2f}x")
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
