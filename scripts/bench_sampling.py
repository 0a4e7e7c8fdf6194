"""Benchmark of stage 1 on a model of the exact LLaVA-1.5-7B shape (random weights, same cost).

Compares, in one run, per question 1 greedy answer + N samples:
  (a) the usual loop: one greedy `generate` and N sampled `generate` calls, batch size 1;
  (b) `generate` batched, greedy plus `num_return_sequences=N` (the prefill repeated N times);
  (c) ours: one prefill per question, samples grouped by prefix (semantic_entropy.sampling.sampler);
  (d) the prefill-only bound: vision tower + one forward pass per question.

The random model is shaped so that its answers look like LLaVA's on POPE: after the prompt's
last token (":" of "ASSISTANT:") about 0.9 of the mass is on "Yes" and the rest mostly on "No";
after any other token EOS dominates. This only sets values; every matrix has its real shape.

PYTHONPATH=. python scripts/bench_sampling.py --num-questions 256 --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

from llava.constants import IMAGE_TOKEN_INDEX
from llava.model.builder import empty_model
from semantic_entropy.sampling.prefix_groups import group_questions, plan_batches
from semantic_entropy.sampling.sampler import SamplingSettings, sample_batch, sample_shared_prefix

YES, NO, EOS, COLON = 3869, 1939, 2, 29901  # Llama-2 ids


def llava_7b_config() -> LlavaConfig:
    text = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                       rms_norm_eps=1e-5, tie_word_embeddings=False)
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                              num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768,
                              hidden_act="quick_gelu")
    config = LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_id=32000,
                         projector_hidden_act="gelu", vision_feature_layer=-2,
                         vision_feature_select_strategy="default", image_seq_length=576, tie_word_embeddings=False)
    config.image_aspect_ratio = "pad"
    return config


@torch.no_grad()
def shaped_random_model(device: str, dtype: torch.dtype, yes_logit: float, no_logit: float, scale: float,
                        config: LlavaConfig | None = None):
    model = empty_model(config or llava_7b_config(), device, dtype)
    generator = torch.Generator(device=device).manual_seed(0)
    for name, p in model.named_parameters():
        if "norm" in name or "layrnorm" in name:
            p.fill_(1.0) if name.endswith("weight") else p.zero_()
        elif name.endswith("bias"):
            p.zero_()
        else:
            p.normal_(0.0, 0.02, generator=generator)
    hidden = model.config.text_config.hidden_size
    embed = model.get_input_embeddings().weight  # (V, H)
    common = torch.randn(hidden, device=device, generator=generator)
    common /= common.norm()
    colon = torch.randn(hidden, device=device, generator=generator)
    colon -= (colon @ common) * common
    colon /= colon.norm()
    # Huge input embeddings dominate the residual stream, so the last hidden state (after the
    # final RMSNorm, norm sqrt(H)) points along the current token's embedding.
    noise = torch.randn(embed.shape, device=device, generator=generator)
    noise = noise / noise.norm(dim=1, keepdim=True)
    embed.copy_(scale * (common + 0.3 * noise))
    embed[COLON] = scale * colon
    head = model.lm_head.weight
    head.normal_(0.0, 0.002, generator=generator)
    root = hidden**0.5
    head[YES] += yes_logit / root * colon
    head[NO] += no_logit / root * colon
    head[EOS] += yes_logit / root * common
    return model.eval().requires_grad_(False)


def pope_like_prompts(count: int, seed: int = 0) -> list[torch.Tensor]:
    """BOS, a 34-token system part and 'USER:', the image slot, a 10-14-token question, 'ASSISTANT:'."""
    g = torch.Generator().manual_seed(seed)
    prompts = []
    for _ in range(count):
        question = int(torch.randint(10, 15, (1,), generator=g))
        head = torch.randint(100, 29000, (34,), generator=g)
        tail = torch.randint(100, 29000, (question,), generator=g)
        prompts.append(torch.cat([torch.tensor([1]), head, torch.tensor([IMAGE_TOKEN_INDEX]), tail,
                                  torch.tensor([29871, 13, 319, 1799, 9047, 13566, COLON])]))
    return prompts


def pope_structure(pope_dir: str, tokenizer_dir: str, num_images: int | None):
    """POPE's real questions (8,910, 500 images, 18 each) as prompts of the real tokenizer.

    Returns the question records (the first `num_images` images' questions, in file order),
    their full prompt ids, and a random pixel tensor per image.
    """
    from transformers import AutoTokenizer

    from llava.conversation import build_prompt
    from llava.eval.prepare_pope import prepare_pope_questions
    from llava.mm_utils import tokenizer_image_token

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    questions = prepare_pope_questions(pope_dir)
    images = list(dict.fromkeys(q["image"] for q in questions))
    if num_images is not None:
        keep = set(images[:num_images])
        questions = [q for q in questions if q["image"] in keep]
        images = images[:num_images]
    prompts = [tokenizer_image_token(build_prompt(q["text"], "vicuna_v1"), tokenizer, return_tensors="pt")
               for q in questions]
    g = torch.Generator().manual_seed(2)
    pixels = {image: torch.randn(3, 336, 336, generator=g) for image in images}
    return tokenizer, questions, prompts, pixels


def run_shared(model, tokenizer, questions, pixels, settings, max_questions, max_images, stats):
    for groups in plan_batches(group_questions(questions, tokenizer, "vicuna_v1"), max_questions, max_images):
        px = torch.stack([pixels[g.image] for g in groups]).to(model.device, model.text_dtype)
        embeds, mask, positions = model.embed_multimodal([torch.tensor(g.prefix_ids) for g in groups],
                                                         model.encode_images(px))
        suffixes = [(row, ids) for row, g in enumerate(groups) for ids in g.suffix_ids]
        generators = [torch.Generator().manual_seed(int(q["question_id"])) for g in groups for q in g.questions]
        for result in sample_shared_prefix(model, embeds, mask, positions, suffixes, generators, settings, EOS):
            stats["distinct"].append(result.distinct_answers)


def timed(fn, device) -> float:
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize(device)
    return time.perf_counter() - start


def run_usual_loop(model, prompts, pixels, num_samples, max_new_tokens):
    for ids, px in zip(prompts, pixels):
        model.generate(ids[None].to(model.device), images=px[None], do_sample=False, max_new_tokens=max_new_tokens,
                       pad_token_id=EOS)
        for _ in range(num_samples):
            model.generate(ids[None].to(model.device), images=px[None], do_sample=True, temperature=1.0, top_k=0,
                           top_p=1.0, max_new_tokens=max_new_tokens, pad_token_id=EOS)


def run_batched_generate(model, prompts, pixels, num_samples, max_new_tokens, batch_size):
    parent = type(model).__mro__[1]
    for start in range(0, len(prompts), batch_size):
        ids, px = prompts[start : start + batch_size], pixels[start : start + batch_size]
        embeds, mask, _ = model.embed_multimodal(ids, model.encode_images(px))
        common = dict(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens, pad_token_id=EOS)
        parent.generate(model, do_sample=False, **common)
        parent.generate(model, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                        num_return_sequences=num_samples, **common)


def run_ours(model, prompts, pixels, settings, batch_size, stats):
    for start in range(0, len(prompts), batch_size):
        ids, px = prompts[start : start + batch_size], pixels[start : start + batch_size]
        embeds, mask, positions = model.embed_multimodal(ids, model.encode_images(px))
        generators = [torch.Generator().manual_seed(start + i) for i in range(len(ids))]
        for result in sample_batch(model, embeds, mask, positions, generators, settings, EOS):
            stats["distinct"].append(result.distinct_answers)
            stats["top_prob"].append(float(result.first_token_probs.max()))
            stats["answer_tokens"].append(len(result.greedy.token_ids))


def run_prefill_only(model, prompts, pixels, batch_size):
    for start in range(0, len(prompts), batch_size):
        ids, px = prompts[start : start + batch_size], pixels[start : start + batch_size]
        embeds, mask, positions = model.embed_multimodal(ids, model.encode_images(px))
        model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, logits_to_keep=1, use_cache=False)


def measure(name, fn, count, device, results):
    torch.cuda.reset_peak_memory_stats(device)
    seconds = timed(fn, device)
    results[name] = {"questions": count, "seconds": seconds, "questions_per_s": count / seconds,
                     "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30}
    print(f"{name:28s} {count:5d} q {seconds:8.2f} s {count / seconds:8.2f} q/s "
          f"peak {results[name]['peak_gib']:.1f} GiB", flush=True)


def memory_trace(model, prompts, pixels, settings):
    """Peak memory of each phase of one batch of (c)."""
    from llava.model.generation import StepRunner

    def mark(label):
        torch.cuda.synchronize()
        print(f"  {label:34s} now {torch.cuda.memory_allocated() / 2**30:6.2f} GiB, "
              f"peak {torch.cuda.max_memory_allocated() / 2**30:6.2f} GiB", flush=True)
        torch.cuda.reset_peak_memory_stats()

    torch.cuda.reset_peak_memory_stats()
    mark("start")
    features = model.encode_images(pixels)
    mark("encode_images")
    embeds, mask, positions = model.embed_multimodal(prompts, features)
    mark("embed_multimodal")
    runner = StepRunner(model, embeds, mask, positions)
    mark("prefill (with cache)")
    rows = torch.arange(len(prompts)).repeat_interleave(2)
    runner.select_rows(rows)
    mark("select_rows to 2 rows per question")
    runner.step(torch.full((len(rows),), YES, device=embeds.device))
    mark("one decode step")
    del runner
    mark("freed")


def profile(model, prompts, pixels, settings, batch_size):
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for name, fn in (("(d)", lambda: run_prefill_only(model, prompts, pixels, batch_size)),
                     ("(c)", lambda: run_ours(model, prompts, pixels, settings, batch_size,
                                              {"distinct": [], "top_prob": [], "answer_tokens": []}))):
        torch.cuda.reset_peak_memory_stats()
        with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        print(f"profile {name}: peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60))


@torch.inference_mode()
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-questions", type=int, default=256)
    parser.add_argument("--loop-questions", type=int, default=4, help="questions for the slow usual loop (a)")
    parser.add_argument("--generate-questions", type=int, default=32, help="questions for (b)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--generate-batch-size", type=int, default=8)
    parser.add_argument("--num-samples", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--yes-logit", type=float, default=16.0)
    parser.add_argument("--no-logit", type=float, default=13.8)
    parser.add_argument("--embed-scale", type=float, default=3e4)
    parser.add_argument("--methods", default="d,c,b,a")
    parser.add_argument("--output-json", default=None)
    parser.add_argument("--pope-dir", default=None, help="POPE label files: run on POPE's real questions and images")
    parser.add_argument("--tokenizer-dir", default=None, help="Llama-2 tokenizer folder (with --pope-dir)")
    parser.add_argument("--pope-images", type=int, default=None, help="only the first N images' questions")
    parser.add_argument("--shared-batch-size", type=int, default=128)
    parser.add_argument("--images-per-batch", type=int, default=16)
    parser.add_argument("--memory-trace", action="store_true", help="peak memory per phase of one batch of (c)")
    parser.add_argument("--profile", action="store_true", help="print a CUDA-time profile of (c) and (d) on 2 batches")
    args = parser.parse_args(argv)

    device = "cuda"
    dtype = getattr(torch, args.dtype)
    model = shaped_random_model(device, dtype, args.yes_logit, args.no_logit, args.embed_scale)
    print(f"device {torch.cuda.get_device_name(0)}, weights {torch.cuda.memory_allocated() / 2**30:.1f} GiB", flush=True)
    if args.pope_dir:
        tokenizer, pope_questions, prompts, image_pixels = pope_structure(args.pope_dir, args.tokenizer_dir,
                                                                          args.pope_images)
        args.num_questions = len(prompts)
        pixels = torch.stack([image_pixels[q["image"]] for q in pope_questions]).to(dtype)  # host; moved per batch
        print(f"POPE structure: {len(prompts)} questions over {len(image_pixels)} images", flush=True)
    else:
        prompts = pope_like_prompts(args.num_questions)
        pixels = torch.randn(args.num_questions, 3, 336, 336, generator=torch.Generator().manual_seed(1)).to(dtype)
    settings = SamplingSettings(num_samples=args.num_samples, temperature=1.0, max_new_tokens=args.max_new_tokens)
    n = args.num_questions
    warm = min(args.batch_size, n)

    # Warm-up: kernels, allocator, cuBLAS handles.
    run_prefill_only(model, prompts[:warm], pixels[:warm], args.batch_size)
    run_ours(model, prompts[:warm], pixels[:warm], settings, args.batch_size, {"distinct": [], "top_prob": [], "answer_tokens": []})
    if args.pope_dir and "e" in args.methods.split(","):
        first = pope_questions[0]["image"]
        run_shared(model, tokenizer, [q for q in pope_questions if q["image"] == first], image_pixels, settings,
                   args.shared_batch_size, args.images_per_batch, {"distinct": []})

    print(f"attention: text {model.config.text_config._attn_implementation}, "
          f"vision {model.config.vision_config._attn_implementation}", flush=True)
    if args.memory_trace:
        memory_trace(model, prompts[: args.batch_size], pixels[: args.batch_size], settings)
    if args.profile:
        profile(model, prompts[: 2 * args.batch_size], pixels[: 2 * args.batch_size], settings, args.batch_size)

    results, stats = {}, {"distinct": [], "top_prob": [], "answer_tokens": []}
    methods = args.methods.split(",")
    if "e" in methods:
        shared_stats = {"distinct": []}
        measure("(e) ours, prefix shared", lambda: run_shared(model, tokenizer, pope_questions, image_pixels, settings,
                                                             args.shared_batch_size, args.images_per_batch,
                                                             shared_stats), n, device, results)
    if "d" in methods:
        measure("(d) prefill-only bound", lambda: run_prefill_only(model, prompts, pixels, args.batch_size), n, device, results)
    if "c" in methods:
        measure("(c) ours", lambda: run_ours(model, prompts, pixels, settings, args.batch_size, stats), n, device, results)
    if "b" in methods:
        k = min(args.generate_questions, n)
        measure("(b) batched generate", lambda: run_batched_generate(
            model, prompts[:k], pixels[:k], args.num_samples, args.max_new_tokens, args.generate_batch_size), k, device, results)
    if "a" in methods:
        k = min(args.loop_questions, n)
        measure("(a) usual loop", lambda: run_usual_loop(
            model, prompts[:k], pixels[:k], args.num_samples, args.max_new_tokens), k, device, results)

    summary = {
        "mean_distinct_answers": sum(stats["distinct"]) / max(len(stats["distinct"]), 1),
        "mean_first_token_top_prob": sum(stats["top_prob"]) / max(len(stats["top_prob"]), 1),
        "mean_greedy_answer_tokens": sum(stats["answer_tokens"]) / max(len(stats["answer_tokens"]), 1),
    }
    qps = {k: v["questions_per_s"] for k, v in results.items()}
    if "(e) ours, prefix shared" in qps and "(d) prefill-only bound" in qps:
        summary["shared / (d) prefill-only bound"] = qps["(e) ours, prefix shared"] / qps["(d) prefill-only bound"]
    if "(c) ours" in qps:
        for other in ("(d) prefill-only bound", "(a) usual loop", "(b) batched generate", "(e) ours, prefix shared"):
            if other in qps:
                summary[f"ours / {other}"] = qps["(c) ours"] / qps[other]
    print(json.dumps(summary, indent=2))
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump({"settings": vars(args), "results": results, "summary": summary,
                       "device": torch.cuda.get_device_name(0)}, f, indent=2)


if __name__ == "__main__":
    main()
