"""Time stage 2 with the exact judge on a synthetic POPE-sized generations file.

    python scripts/bench_scores.py [--questions 8910] [--samples 10] [--workdir DIR]

Writes a generations file shaped like stage 1's (yes/no answers with 2 tokens each, EOS
included), then runs `semantic_entropy.compute_se_myself` in this process with every measure
and prints the wall time. Target: under 10 s for 8,910 questions x 10 samples on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from semantic_entropy.compute_se_myself import main  # noqa: E402

ANSWERS = {"Yes": 3869, "No": 1939, "yes": 4874, "no": 694, "Yes, there is.": 3869}


def synthetic_answer(rng: random.Random) -> dict:
    text = rng.choice(list(ANSWERS))
    logprob = -rng.expovariate(3.0)
    return {
        "text": text,
        "token_ids": [ANSWERS[text], 2],
        "token_logprobs": [logprob, -rng.expovariate(50.0)],
        "token_entropies": [rng.uniform(0, 1), rng.uniform(0, 0.2)],
        "ends_with_eos": True,
    }


def write_synthetic_generations(path: str, num_questions: int, num_samples: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for index in range(num_questions):
            yes_mass = rng.uniform(0, 1)
            record = {
                "question_id": index + 1,
                "category": ("adversarial", "random", "popular")[index % 3],
                "image": f"COCO_val2014_{index:012d}.jpg",
                "prompt": "Is there a dog in the image?\nAnswer the question using a single word or phrase.",
                "greedy": synthetic_answer(rng),
                "samples": [synthetic_answer(rng) for _ in range(num_samples)],
                "first_token": {"yes_mass": yes_mass * 0.98, "no_mass": (1 - yes_mass) * 0.98},
                "sampling": {"num_samples": num_samples, "temperature": 1.0, "top_p": None, "top_k": None,
                             "seed": 0, "question_seed": index, "max_new_tokens": 128},
                "model_id": "synthetic",
            }
            f.write(json.dumps(record) + "\n")


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=8910)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--workdir", default=None, help="folder for the files (default: a temporary one)")
    args = parser.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_scores_")
    os.makedirs(workdir, exist_ok=True)
    generations = os.path.join(workdir, "generations.jsonl")
    output = os.path.join(workdir, "uncertainty.jsonl")
    write_synthetic_generations(generations, args.questions, args.samples)
    if os.path.exists(output):
        os.remove(output)
    start = time.perf_counter()
    rc = main(["--generations-file", generations, "--output-file", output, "--judge", "exact"])
    seconds = time.perf_counter() - start
    if rc != 0:
        sys.exit(rc)
    print(f"{args.questions} questions x {args.samples} samples, exact judge, all measures: "
          f"{seconds:.2f} s ({1e3 * seconds / args.questions:.3f} ms/question)  -> {output}")


if __name__ == "__main__":
    main_bench()
