"""Compare the one-GPU and two-GPU outputs of `bench_multi_gpu.sh` (prints one JSON line).

python scripts/compare_multi_gpu_outputs.py WORK
"""

from __future__ import annotations

import json
import sys

from llava.jsonl_io import read_jsonl


def generation_paths(record: dict) -> list[dict]:
    return [record["greedy"], *record["samples"]]


def compare_generations(one: list[dict], two: list[dict]) -> dict:
    same_ids = [g["question_id"] for g in one] == [g["question_id"] for g in two]
    tokens = lambda g: [(p["token_ids"], p["text"]) for p in generation_paths(g)]  # noqa: E731
    same_tokens = same_ids and all(tokens(a) == tokens(b) for a, b in zip(one, two))
    max_difference = max((abs(x - y) for a, b in zip(one, two)
                          for u, v in zip(generation_paths(a), generation_paths(b))
                          for x, y in zip(u["token_logprobs"], v["token_logprobs"])), default=0.0)
    return {"questions": len(one), "same_ids_in_order": same_ids, "same_tokens_and_texts": same_tokens,
            "max_abs_logprob_difference": max_difference}


def numbers(value):
    """The floats of a (nested) record value, in order."""
    if isinstance(value, float):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from numbers(item)


def compare_attention(one: list[dict], two: list[dict]) -> dict:
    same_ids = [r["question_id"] for r in one] == [r["question_id"] for r in two]
    exact = lambda r: {k: v for k, v in r.items() if not list(numbers(v))}  # noqa: E731
    same_exact = same_ids and all(exact(a) == exact(b) for a, b in zip(one, two))
    max_difference = max((abs(x - y) for a, b in zip(one, two) for key in a
                          for x, y in zip(numbers(a[key]), numbers(b.get(key)))), default=0.0)
    return {"questions": len(one), "same_ids_in_order": same_ids, "same_tokens_and_other_fields": same_exact,
            "max_abs_float_difference": max_difference}


def main(argv=None) -> None:
    work = (argv or sys.argv[1:])[0]
    report = {"stage1": compare_generations(read_jsonl(f"{work}/one/answers.generations.jsonl"),
                                            read_jsonl(f"{work}/two/answers.generations.jsonl")),
              "attention": compare_attention(read_jsonl(f"{work}/att_one/attention_stats.jsonl"),
                                             read_jsonl(f"{work}/att_two/attention_stats.jsonl"))}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
