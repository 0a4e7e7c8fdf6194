"""Build LLaVA's `llava_pope_test.jsonl` from the POPE label files.

LLaVA-1.5 evaluates POPE on one question file that concatenates the three COCO splits
(adversarial, random, popular) and keeps each split apart by adding a fixed offset to the
split's own question_id. `eval_pope` undoes that offset to find a question's label, so the
offsets here are the contract between the two modules.

    python -m llava.eval.prepare_pope --pope-dir DIR --output-file FILE [--per-category N --seed S]
        [--free-form]

`--free-form` writes POPE's question text alone, without LLaVA's single-word instruction
(`POPE_ANSWER_SUFFIX`), so the model answers in sentences: the setting where semantic entropy
has meanings to tell apart. Ids, images and categories are unchanged, so `eval_pope` and
`eval_auroc` join such a file to the labels as they join the original (a question's text is
compared with its label's text after any suffix is removed) and read each sentence answer as
yes or no the way eval_pope reads it.
"""

from __future__ import annotations

import json
import os
import random
import sys

from llava.cli import new_parser, run_main
from llava.constants import POPE_ANSWER_SUFFIX
from llava.jsonl_io import JsonlError, iter_jsonl

# Order of the splits in LLaVA's question file, and the id offset of each split.
POPE_CATEGORIES = ("adversarial", "random", "popular")
CATEGORY_OFFSETS = {"adversarial": 0, "random": 10_000_000, "popular": 20_000_000}

LABEL_FIELDS = ("question_id", "image", "text", "label")


def label_file_path(pope_dir: str, category: str) -> str:
    return os.path.join(pope_dir, f"coco_pope_{category}.json")


def read_label_file(path: str) -> list[dict]:
    """POPE label records in file order; a missing file, field or duplicate id is an error."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"POPE label file not found: {path}")
    records = []
    seen: dict = {}
    for line_number, record in iter_jsonl(path):
        for field in LABEL_FIELDS:
            if field not in record:
                raise JsonlError(f"{path}:{line_number}: missing field {field!r}")
        qid = record["question_id"]
        if not isinstance(qid, int) or isinstance(qid, bool):
            raise JsonlError(f"{path}:{line_number}: question_id {qid!r} is not an integer")
        if qid in seen:
            raise JsonlError(f"{path}:{line_number}: duplicate question_id {qid} (first on line {seen[qid]})")
        seen[qid] = line_number
        records.append(record)
    return records


def to_llava_question(label_record: dict, category: str, free_form: bool = False) -> dict:
    """One LLaVA question record; key order and text exactly as in LLaVA's file (without the
    answer-format suffix when `free_form`)."""
    return {
        "question_id": label_record["question_id"] + CATEGORY_OFFSETS[category],
        "image": label_record["image"],
        # POPE's own text is kept verbatim, typos ("imange") included.
        "text": label_record["text"] + ("" if free_form else POPE_ANSWER_SUFFIX),
        "category": category,
    }


def sample_records(records: list[dict], per_category: int, seed: int) -> list[dict]:
    """A reproducible subset of `per_category` records, back in question_id order."""
    if per_category < 0:
        raise ValueError(f"per_category must be >= 0, got {per_category}")
    if per_category >= len(records):
        return list(records)
    chosen = random.Random(seed).sample(records, per_category)
    return sorted(chosen, key=lambda r: r["question_id"])


def prepare_pope_questions(pope_dir: str, per_category: int | None = None, seed: int = 0,
                           free_form: bool = False) -> list[dict]:
    """LLaVA's POPE question records: adversarial, random, popular, with ids offset per split."""
    questions = []
    for category in POPE_CATEGORIES:
        records = read_label_file(label_file_path(str(pope_dir), category))
        if per_category is not None:
            # The same seed for every split: each split's draw depends only on its own file.
            records = sample_records(records, per_category, seed)
        questions.extend(to_llava_question(r, category, free_form) for r in records)
    return questions


def write_questions(questions: list[dict], output_file: str) -> None:
    directory = os.path.dirname(os.path.abspath(output_file))
    os.makedirs(directory, exist_ok=True)
    with open(output_file, "w", encoding="utf-8") as f:
        for question in questions:
            f.write(json.dumps(question) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = new_parser(__doc__)
    parser.add_argument("--pope-dir", required=True, help="folder with coco_pope_{adversarial,random,popular}.json")
    parser.add_argument("--output-file", required=True, help="LLaVA question jsonl to write")
    parser.add_argument("--per-category", type=int, default=None, help="draw N questions per split (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --per-category draw")
    parser.add_argument("--free-form", action="store_true",
                        help="POPE's questions without the single-word instruction: answers are sentences")
    args = parser.parse_args(argv)

    questions = prepare_pope_questions(args.pope_dir, per_category=args.per_category, seed=args.seed,
                                       free_form=args.free_form)
    write_questions(questions, args.output_file)
    counts = {c: sum(q["category"] == c for q in questions) for c in POPE_CATEGORIES}
    form = " (free-form: no answer-format suffix)" if args.free_form else ""
    print(f"Wrote {len(questions)} questions to {args.output_file} ({counts}){form}")


if __name__ == "__main__":
    sys.exit(run_main(main))
