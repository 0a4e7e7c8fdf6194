"""Cost of capturing the answer tokens' attention on a model of the exact LLaVA-1.5-7B shape.

Compares, on the same POPE-like prompts (about 630 positions, 576 of them image):
  (plain)    vision tower + plain sdpa greedy decoding (`llava.model.generation.greedy_decode`);
  (capture)  the same with "sdpa_capture" (`semantic_entropy.attention.capture.answer_with_attention`),
             which also keeps every layer's and head's attention row of each answer token;
  (+stats)   capture plus the per-question table row (`attention_stats.question_statistics`).
and prints seconds per question and the peak GPU memory above the weights, per batch size.
With --check-eager it also compares the captured rows with eager attention
(`output_attentions=True`) on a few questions.

The model is `scripts/bench_sampling.py`'s shaped random model (answers "Yes" then EOS, like
LLaVA on POPE); --ignore-eos makes every answer --max-new-tokens long, to see the per-token cost.

PYTHONPATH=. python scripts/bench_attention.py --num-questions 64 --batch-sizes 1,8 --check-eager
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_sampling import EOS, pope_like_prompts, shaped_random_model  # noqa: E402

from llava.model.generation import greedy_decode  # noqa: E402
from semantic_entropy.attention.capture import REGIONS, answer_with_attention, prompt_layout  # noqa: E402
from semantic_entropy.attention.stats import Aggregation, answer_token_rows, question_statistics  # noqa: E402


def run_plain(model, prompts, pixels, batch_size, max_new_tokens, eos):
    tokens = []
    for start in range(0, len(prompts), batch_size):
        ids, px = prompts[start : start + batch_size], pixels[start : start + batch_size]
        embeds, mask, positions = model.embed_multimodal(ids, model.encode_images(px))
        tokens += [a.token_ids for a in greedy_decode(model, embeds, mask, positions, max_new_tokens, eos)]
    return tokens


def run_capture(model, prompts, pixels, batch_size, max_new_tokens, eos, with_stats=False):
    tokens = []
    num_layers = model.config.text_config.num_hidden_layers
    for start in range(0, len(prompts), batch_size):
        ids, px = prompts[start : start + batch_size], pixels[start : start + batch_size]
        for answer in answer_with_attention(model, ids, px, max_new_tokens, eos):
            tokens.append(answer.token_ids)
            if with_stats:
                question_statistics(answer.image, answer.regions, REGIONS, answer_token_rows(answer.token_ids, eos),
                                    Aggregation(range(num_layers), "mean"), 640, 480)
    return tokens


def measure(name, fn, count, device, results, batch_size):
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    tokens = fn()
    torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    extra = (torch.cuda.max_memory_allocated(device) - before) / 2**30
    key = f"{name} bs{batch_size}"
    results[key] = {"questions": count, "seconds": seconds, "seconds_per_question": seconds / count,
                    "peak_extra_gib": extra, "mean_answer_tokens": sum(map(len, tokens)) / count}
    print(f"{key:18s} {count:4d} q {seconds:8.2f} s {seconds / count:7.4f} s/q  peak above weights {extra:6.3f} GiB  "
          f"answer tokens {results[key]['mean_answer_tokens']:.1f}", flush=True)
    return tokens


@torch.inference_mode()
def check_eager(model, prompts, pixels, max_new_tokens, eos, count):
    """Max |captured - eager| over the image columns of every answer token, layer and head."""
    answers = answer_with_attention(model, prompts[:count], pixels[:count], max_new_tokens, eos)
    previous = model.config.text_config._attn_implementation
    model.set_attn_implementation({"text_config": "eager"})
    worst, worst_relative = 0.0, 0.0
    try:
        features = model.encode_images(pixels[:count])
        for row, answer in enumerate(answers):
            ids = torch.cat([prompts[row], torch.tensor(answer.token_ids[:-1], dtype=torch.long)])
            embeds, mask, positions = model.embed_multimodal([ids], features[row : row + 1])
            out = model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, output_attentions=True,
                        use_cache=False, logits_to_keep=1)
            prompt_length = embeds.shape[1] - (len(answer.token_ids) - 1)
            columns = prompt_layout([prompts[row]], 576, prompt_length).image_columns[0].to(embeds.device)
            for t in range(len(answer.token_ids)):
                query = prompt_length - 1 + t
                eager = torch.stack([a[0, :, query, columns].float() for a in out.attentions]).cpu()  # (L, H, 576)
                captured = torch.from_numpy(answer.image[t])
                difference = (captured - eager).abs()
                worst = max(worst, float(difference.max()))
                worst_relative = max(worst_relative, float((difference / eager.abs().clamp(min=1e-4)).max()))
            del out
    finally:
        model.set_attn_implementation({"text_config": previous})
    return {"questions": count, "max_abs_diff": worst, "max_rel_diff_where_weight_ge_1e-4": worst_relative}


@torch.inference_mode()
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-questions", type=int, default=64)
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--ignore-eos", action="store_true", help="never stop early: answers of --max-new-tokens")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--yes-logit", type=float, default=16.0)
    parser.add_argument("--no-logit", type=float, default=13.8)
    parser.add_argument("--embed-scale", type=float, default=3e4)
    parser.add_argument("--check-eager", action="store_true", help="compare captured rows with eager attention")
    parser.add_argument("--eager-questions", type=int, default=2)
    parser.add_argument("--output-json", default=None)
    args = parser.parse_args(argv)

    device = "cuda"
    model = shaped_random_model(device, getattr(torch, args.dtype), args.yes_logit, args.no_logit, args.embed_scale)
    weights = torch.cuda.memory_allocated() / 2**30
    print(f"device {torch.cuda.get_device_name(0)}, torch {torch.__version__}, weights {weights:.1f} GiB, "
          f"text attention {model.config.text_config._attn_implementation}", flush=True)
    import transformers

    print(f"transformers {transformers.__version__}", flush=True)
    n = args.num_questions
    prompts = pope_like_prompts(n)
    pixels = torch.randn(n, 3, 336, 336, generator=torch.Generator().manual_seed(1))
    pixels = pixels.to(device, getattr(torch, args.dtype))
    eos = -1 if args.ignore_eos else EOS
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    warm = min(max(batch_sizes), n)  # kernels, allocator, cuBLAS handles
    run_plain(model, prompts[:warm], pixels[:warm], warm, args.max_new_tokens, eos)
    run_capture(model, prompts[:warm], pixels[:warm], warm, args.max_new_tokens, eos)

    results = {}
    for bs in batch_sizes:
        plain = measure("plain sdpa", lambda: run_plain(model, prompts, pixels, bs, args.max_new_tokens, eos),
                        n, device, results, bs)
        captured = measure("capture", lambda: run_capture(model, prompts, pixels, bs, args.max_new_tokens, eos),
                           n, device, results, bs)
        measure("capture+stats", lambda: run_capture(model, prompts, pixels, bs, args.max_new_tokens, eos, True),
                n, device, results, bs)
        same = sum(a == b for a, b in zip(plain, captured))
        print(f"  identical greedy answers: {same}/{n}", flush=True)
        p, c = results[f"plain sdpa bs{bs}"], results[f"capture bs{bs}"]
        results[f"overhead bs{bs}"] = {
            "extra_seconds_per_question": c["seconds_per_question"] - p["seconds_per_question"],
            "extra_peak_gib": c["peak_extra_gib"] - p["peak_extra_gib"], "identical_answers": same}
        print(f"  capture overhead: {results[f'overhead bs{bs}']['extra_seconds_per_question']:+.4f} s/q, "
              f"{results[f'overhead bs{bs}']['extra_peak_gib']:+.3f} GiB peak", flush=True)
    if args.check_eager:
        results["eager_check"] = check_eager(model, prompts, pixels, args.max_new_tokens, eos, args.eager_questions)
        print("eager check:", json.dumps(results["eager_check"]), flush=True)
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump({"settings": vars(args), "device": torch.cuda.get_device_name(0), "results": results}, f,
                      indent=2)


if __name__ == "__main__":
    main()
