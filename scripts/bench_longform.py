"""Stage 1 on long answers: a model of the exact LLaVA-1.5-7B shape, 1 greedy + N samples per question.

Cases (random weights shaped so that the language model is a Markov chain over tokens: the huge
input embeddings dominate the residual stream, so the next-token distribution depends on the
current token; every matrix has its real shape, so the cost is the real one):
  worst-64, worst-128: near-uniform next-token distributions, EOS never drawn: every sample is
      its own path from the first token and every answer is exactly L tokens long;
  realistic: peaked distributions (entropy about 1.3 nats, top token about 0.65) and an EOS
      chance per token giving answers of about --mean-length tokens (at most 128): samples share
      their first tokens, then diverge, and end at different lengths.
Methods per case:
  ours (`sample_batch`, the tree handing over to the row decoder) at each of --batch-sizes;
  ours, tree only (the sampler before the row decoder) at the first batch size;
  ours with the step run eagerly (no CUDA graphs), at the largest batch size;
  transformers `generate` with num_return_sequences=N (plus one greedy call) at --generate-batch-size;
  the usual loop: 1 greedy + N sampled `generate` calls per question (worst-64 only, few questions).

PYTHONPATH=. python scripts/bench_longform.py --output-dir /tmp/bench
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from scripts.bench_sampling import EOS, llava_7b_config, pope_like_prompts, shaped_random_model
from semantic_entropy.sampling.row_decoder import RowOptions
from semantic_entropy.sampling.sampler import Handover, SamplingSettings, sample_batch

CASES = {  # name: (max_new_tokens, head std, EOS on)
    "worst-64": (64, 0.002, False),
    "worst-128": (128, 0.002, False),
    "realistic": (128, 0.125, True),
}


@torch.no_grad()
def set_answer_model(model, head_std: float, eos_chance: float | None, seed: int = 3) -> None:
    """Next-token logits of std 64 * head_std around the current token; EOS at `eos_chance` per token (None: never).

    The last hidden state is about sqrt(H) times the current token's unit embedding, so the logits
    are the head's rows against it; the EOS row points along the embeddings' common direction.
    """
    device = model.device
    generator = torch.Generator(device=device).manual_seed(seed)
    head = model.lm_head.weight  # (V, H)
    embed = model.get_input_embeddings().weight  # (V, H)
    head.normal_(0.0, head_std, generator=generator)
    common = embed.float().mean(0)
    common /= common.norm()
    root = embed.shape[1] ** 0.5
    if eos_chance is None:
        head[EOS] = -60.0 / root * common  # logit about -57: never drawn
        return
    head[EOS] = 0.0
    tokens = torch.randint(3, embed.shape[0], (256, 1), device=device, generator=generator)
    hidden = model.model.language_model(input_ids=tokens).last_hidden_state[:, -1].float()  # (256, H) as decoded
    log_rest = (hidden @ head.float().T).logsumexp(-1).mean()  # log of the other tokens' mass
    along = (hidden @ common).mean()
    target = log_rest + torch.log(torch.tensor(eos_chance / (1 - eos_chance)))
    head[EOS] = (target / along) * common


def smoke_config():
    """The 7B config at a tiny width and depth (a CPU smoke run of this script)."""
    config = llava_7b_config()
    for key, value in dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=4).items():
        setattr(config.text_config, key, value)
    for key, value in dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2).items():
        setattr(config.vision_config, key, value)
    return config


def timed(fn) -> tuple[float, float]:
    """(seconds, peak GiB on the GPU; 0 on the CPU) of fn()."""
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0


def run_ours(model, prompts, pixels, settings, batch_size, eos, engine, stats):
    for start in range(0, len(prompts), batch_size):
        ids, px = prompts[start : start + batch_size], pixels[start : start + batch_size]
        embeds, mask, positions = model.embed_multimodal(ids, model.encode_images(px))
        generators = [torch.Generator().manual_seed(start + i) for i in range(len(ids))]
        for result in sample_batch(model, embeds, mask, positions, generators, settings, eos, engine=engine):
            stats["distinct"].append(result.distinct_answers)
            stats["lengths"] += [len(s.token_ids) for s in result.samples]


def run_generate(model, prompts, pixels, num_samples, max_new_tokens, batch_size, eos_on):
    parent = type(model).__mro__[1]
    length = {} if eos_on else {"min_new_tokens": max_new_tokens}
    for start in range(0, len(prompts), batch_size):
        ids, px = prompts[start : start + batch_size], pixels[start : start + batch_size]
        embeds, mask, _ = model.embed_multimodal(ids, model.encode_images(px))
        common = dict(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens, pad_token_id=EOS,
                      eos_token_id=EOS, **length)
        parent.generate(model, do_sample=False, **common)
        parent.generate(model, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                        num_return_sequences=num_samples, **common)


def run_usual_loop(model, prompts, pixels, num_samples, max_new_tokens):
    for ids, px in zip(prompts, pixels):
        common = dict(images=px[None], max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                      pad_token_id=EOS, eos_token_id=EOS)
        model.generate(ids[None].to(model.device), do_sample=False, **common)
        for _ in range(num_samples):
            model.generate(ids[None].to(model.device), do_sample=True, temperature=1.0, top_k=0, top_p=1.0, **common)


def bench_case(model, name, args, prompts, pixels, report):
    max_new_tokens, head_std, eos_on = CASES[name]
    set_answer_model(model, head_std, 1 / args.mean_length if eos_on else None)
    settings = SamplingSettings(num_samples=args.num_samples, temperature=1.0, max_new_tokens=max_new_tokens)
    rows = {}

    def measure(label, fn, count):
        try:
            seconds, peak = timed(fn)
        except Exception as error:  # noqa: BLE001 (one failing method must not lose the others' numbers)
            rows[label] = {"error": f"{type(error).__name__}: {error}"[:500]}
            print(f"{name:10s} {label:44s} FAILED {rows[label]['error']}", flush=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return
        rows[label] = {"questions": count, "seconds": seconds, "questions_per_s": count / seconds, "peak_gib": peak}
        print(f"{name:10s} {label:44s} {count:4d} q {seconds:7.2f} s {count / seconds:7.2f} q/s peak {peak:5.1f} GiB",
              flush=True)
        report["cases"][name] = {"max_new_tokens": max_new_tokens, "head_std": head_std, "eos": eos_on, "rows": rows}
        save(report, args)

    n = args.num_questions
    first = args.batch_sizes[0]
    warm = {"distinct": [], "lengths": []}
    for batch in args.batch_sizes:  # kernels, graphs and the allocator's pool at every batch size measured
        run_ours(model, prompts[:batch], pixels[:batch], settings, batch, EOS, "auto", warm)
    if args.profile and name == "worst-64":
        profile(model, prompts, pixels, settings, args)
    methods = args.methods.split(",")
    variants = [v.split(":") for v in args.row_variants.split(",")] if "ours" in methods else []
    for attention, width in variants:
        engine = Handover(options=RowOptions(attention=attention, width_step=int(width)))
        for batch in args.batch_sizes:
            label = f"ours, batch {batch}" + ("" if (attention, width) == ("auto", str(RowOptions.width_step))
                                              else f", attention {attention}, width step {width}")
            stats = {"distinct": [], "lengths": []}
            measure(label, lambda b=batch, e=engine, s=stats: run_ours(model, prompts[:n], pixels[:n], settings, b, EOS,
                                                                       e, s), n)
            if "error" not in rows[label]:
                rows[label]["mean_distinct_answers"] = sum(stats["distinct"]) / len(stats["distinct"])
                rows[label]["mean_sample_tokens"] = sum(stats["lengths"]) / len(stats["lengths"])
    last = args.batch_sizes[-1]
    eager = Handover(options=RowOptions(graphs=False))
    if "eager" in methods:
        measure(f"ours, eager steps (no CUDA graphs), batch {last}",
                lambda: run_ours(model, prompts[:n], pixels[:n], settings, last, EOS, eager,
                                 {"distinct": [], "lengths": []}), n)
    k = min(args.tree_questions, n)
    if "tree" in methods:
        measure(f"ours, tree only (before), batch {first}",
                lambda: run_ours(model, prompts[:k], pixels[:k], settings, first, EOS, "tree",
                                 {"distinct": [], "lengths": []}), k)
    k = min(args.generate_questions, n)
    if k and "generate" in methods:
        measure(f"transformers generate, num_return_sequences={args.num_samples}, batch {args.generate_batch_size}",
                lambda: run_generate(model, prompts[:k], pixels[:k], args.num_samples, max_new_tokens,
                                     args.generate_batch_size, eos_on), k)
    k = min(args.loop_questions, n)
    if k and name == "worst-64" and "loop" in methods:
        measure(f"usual loop (1 + {args.num_samples} generate calls per question)",
                lambda: run_usual_loop(model, prompts[:k], pixels[:k], args.num_samples, max_new_tokens), k)


def profile(model, prompts, pixels, settings, args) -> None:
    """CUDA time per kernel of one batch at the largest batch size, steps run eagerly (graphs hide kernels)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    batch = args.batch_sizes[-1]
    eager = Handover(options=RowOptions(graphs=False))
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run_ours(model, prompts[:batch], pixels[:batch], settings, batch, EOS, eager, {"distinct": [], "lengths": []})
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70)
    print(table, flush=True)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "profile_worst64.txt"), "w") as f:
        f.write(table)


def save(report, args) -> None:
    os.makedirs(args.output_dir, exist_ok=True)
    path = os.path.join(args.output_dir, "bench_longform.json")
    with open(path + ".tmp", "w") as f:
        json.dump(report, f, indent=2)
    os.replace(path + ".tmp", path)


@torch.inference_mode()
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", required=True, help="folder for bench_longform.json")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma list of {', '.join(CASES)}")
    parser.add_argument("--num-questions", type=int, default=32)
    parser.add_argument("--batch-sizes", default="16,32", help="comma list; ours runs at each")
    parser.add_argument("--num-samples", type=int, default=10)
    parser.add_argument("--tree-questions", type=int, default=16, help="questions for the tree-only run")
    parser.add_argument("--generate-questions", type=int, default=16, help="questions for transformers generate")
    parser.add_argument("--generate-batch-size", type=int, default=16)
    parser.add_argument("--loop-questions", type=int, default=1, help="questions for the usual loop (worst-64)")
    parser.add_argument("--mean-length", type=float, default=48.0, help="realistic case: mean answer tokens")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--methods", default="ours,eager,tree,generate,loop",
                        help="comma list of ours, eager, tree, generate, loop")
    parser.add_argument("--row-variants", default=f"auto:{RowOptions.width_step}",
                        help="comma list of attention:width_step for ours (attention: auto, efficient, cudnn)")
    parser.add_argument("--profile", action="store_true", help="also profile one eager batch of worst-64")
    parser.add_argument("--smoke", action="store_true", help="a tiny model on the CPU: checks the script runs")
    args = parser.parse_args(argv)
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    dtype = getattr(torch, args.dtype)
    device = "cpu" if args.smoke else "cuda"
    model = shaped_random_model(device, dtype, 16.0, 13.8, 3e4, smoke_config() if args.smoke else None)
    prompts = pope_like_prompts(args.num_questions)
    pixels = torch.randn(args.num_questions, 3, 336, 336, generator=torch.Generator().manual_seed(1)).to(dtype)
    report = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "torch": torch.__version__,
              "transformers": __import__("transformers").__version__, "settings": vars(args), "cases": {}}
    print(f"device {report['device']}", flush=True)
    for name in args.cases.split(","):
        bench_case(model, name, args, prompts, pixels, report)
    save(report, args)


if __name__ == "__main__":
    main()
