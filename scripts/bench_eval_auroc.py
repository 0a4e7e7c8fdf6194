"""Time stage 3 (`semantic_entropy.eval_auroc`) on a synthetic POPE-sized evaluation, on one CPU core.

    python scripts/bench_eval_auroc.py [--images 500] [--measures 40] [--bootstrap 1000] [--plots] [--workdir DIR]

POPE's shape: every image gets 6 questions in each of the 3 splits (3 about objects present,
3 about absent ones), 18 in all; 500 images give 9,000 questions. About 15% of the greedy
answers are wrong, misses more often than false "yes". The scores mix continuous values and
coarse ones with many ties (as entropies of 10 samples are); the first is yes_no_entropy, so
every other measure gets a paired comparison. The run is the whole command: join, image-
clustered bootstrap of every split, paired differences and the reports (figures only with
--plots). It prints the seconds; the target is under 60 s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

from llava.constants import POPE_ANSWER_SUFFIX
from llava.eval.prepare_pope import CATEGORY_OFFSETS
from semantic_entropy import eval_auroc

QUESTIONS_PER_SPLIT = 6  # per image: 3 present objects, 3 absent


def write_jsonl(path: str, records) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(record) + "\n" for record in records)
    return path


def write_synthetic_pope(folder: str, images: int, measures: int, seed: int = 0) -> list[str]:
    """Label files, question file, greedy answers and one uncertainty file; returns the CLI arguments."""
    rng = np.random.default_rng(seed)
    annotation_dir = os.path.join(folder, "coco")
    os.makedirs(annotation_dir, exist_ok=True)
    questions, answers, wrong = [], [], []
    for category, offset in CATEGORY_OFFSETS.items():
        labels = []
        for image in range(images):
            for k in range(QUESTIONS_PER_SPLIT):
                split_id = image * QUESTIONS_PER_SPLIT + k + 1
                label = "yes" if k < 3 else "no"
                text = f"Is there a {category} object {k} in the image?"
                name = f"COCO_val2014_{image:012d}.jpg"
                labels.append({"question_id": split_id, "image": name, "text": text, "label": label})
                question_id = offset + split_id
                questions.append({"question_id": question_id, "image": name, "text": text + POPE_ANSWER_SUFFIX,
                                  "category": category})
                is_wrong = rng.random() < (0.2 if label == "yes" else 0.1)
                said_yes = (label == "yes") != is_wrong
                answers.append({"question_id": question_id, "prompt": text, "text": "Yes" if said_yes else "No",
                                "answer_id": str(question_id), "model_id": "synthetic", "metadata": {}})
                wrong.append(is_wrong)
        write_jsonl(os.path.join(annotation_dir, f"coco_pope_{category}.json"), labels)
    wrong = np.array(wrong, dtype=float)
    n = len(wrong)
    image_effect = np.tile(np.repeat(rng.normal(size=images), QUESTIONS_PER_SPLIT), 3)  # shared by an image
    columns = {}
    for index in range(measures):
        name = "yes_no_entropy" if index == 0 else f"measure_{index:02d}"
        values = wrong * rng.uniform(0.3, 1.5) + 0.5 * image_effect + rng.normal(size=n)
        columns[name] = np.round(values, 1) if index % 2 else values  # half coarse, with ties
    uncertainty = [{"question_id": q["question_id"], "category": q["category"],
                    "scores": {name: float(values[i]) for name, values in columns.items()}}
                   for i, q in enumerate(questions)]
    return ["--annotation-dir", annotation_dir,
            "--question-file", write_jsonl(os.path.join(folder, "questions.jsonl"), questions),
            "--answers-file", write_jsonl(os.path.join(folder, "answers.jsonl"), answers),
            "--uncertainty-file", write_jsonl(os.path.join(folder, "uncertainty.jsonl"), uncertainty)]


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500, help="images, 18 questions each (default: 500)")
    parser.add_argument("--measures", type=int, default=40, help="score columns (default: 40)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="resamples per split (default: 1000)")
    parser.add_argument("--plots", action="store_true", help="also draw the figures (default: off)")
    parser.add_argument("--workdir", default=None, help="where to write the data (default: a temporary folder)")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the target says
    folder = args.workdir or tempfile.mkdtemp(prefix="bench_eval_auroc_")
    inputs = write_synthetic_pope(folder, args.images, args.measures)
    command = [*inputs, "--output-dir", os.path.join(folder, "eval"), "--bootstrap", str(args.bootstrap),
               "--title", "synthetic benchmark"]
    if not args.plots:
        command.append("--no-plots")
    start = time.perf_counter()
    with open(os.devnull, "w") as quiet:
        stdout, sys.stdout = sys.stdout, quiet
        try:
            status = eval_auroc.main(command)
        finally:
            sys.stdout = stdout
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"eval_auroc failed with status {status}")
    print(f"eval_auroc: {3 * QUESTIONS_PER_SPLIT * args.images} questions, {args.measures} measures, "
          f"{args.bootstrap} resamples, one core: {seconds:.1f} s")
    return seconds


if __name__ == "__main__":
    main()
