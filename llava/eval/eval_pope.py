"""POPE evaluation with LLaVA's CLI, printout and answer parsing, but every join by id.

The original script paired answers with labels by line position after filtering by category,
so a reordered, partial or mismatched answer file gave wrong numbers without complaint. Here
`join_pope` joins answer -> question by question_id and question -> label by the split's own
id (question_id minus the split's offset, see `prepare_pope.CATEGORY_OFFSETS`), checked
against the label's image and text; any mismatch is an error naming the ids. The AUROC stage
reuses `join_pope` so that correctness labels come from exactly the same join.

    python -m llava.eval.eval_pope --annotation-dir D --question-file Q --result-file R
        [--allow-partial] [--output-json FILE]
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

from llava.cli import new_parser, run_main
from llava.constants import POPE_ANSWER_SUFFIX
from llava.eval.prepare_pope import CATEGORY_OFFSETS, POPE_CATEGORIES, label_file_path, read_label_file
from llava.jsonl_io import JsonlError, iter_jsonl, read_keyed_jsonl, write_json_atomic

SEPARATOR = "===================================="  # as printed by LLaVA's eval_pope
MAX_IDS_SHOWN = 10
METRIC_KEYS = ("tp", "fp", "tn", "fn", "accuracy", "precision", "recall", "f1", "yes_ratio")


class PopeJoinError(JsonlError):
    """Questions, answers and labels that do not join one to one; the message names the ids."""


@dataclass(frozen=True)
class PopeRecord:
    question_id: int
    category: str
    image: str
    question: str  # question text as in the question file (answer suffix included)
    label: str  # "yes"/"no" from the annotation
    answer: str  # raw answer text
    prediction: str  # "yes"/"no" parsed as eval_pope parses it

    @property
    def is_correct(self) -> bool:
        return self.prediction == self.label


def parse_yes_no(text: str) -> str:
    """LLaVA's parsing: first sentence, commas dropped, "no" if a word is No/not/no, else "yes"."""
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    if "No" in words or "not" in words or "no" in words:
        return "no"
    return "yes"


def format_ids(ids: Iterable) -> str:
    """The first few ids and how many more, for error messages."""
    ids = list(ids)
    shown = ", ".join(repr(i) for i in ids[:MAX_IDS_SHOWN])
    if len(ids) > MAX_IDS_SHOWN:
        shown += f", ... ({len(ids) - MAX_IDS_SHOWN} more)"
    return shown


def strip_answer_suffix(text: str) -> str:
    return text[: -len(POPE_ANSWER_SUFFIX)] if text.endswith(POPE_ANSWER_SUFFIX) else text


def category_order(categories: Iterable[str]) -> list[str]:
    """POPE splits in LLaVA's order, then any other category in first-seen order."""
    seen = list(dict.fromkeys(categories))
    return [c for c in POPE_CATEGORIES if c in seen] + [c for c in seen if c not in POPE_CATEGORIES]


def load_answers(answers) -> dict:
    """Answer records keyed by question_id, from a result-file path or a list of records."""
    if isinstance(answers, (str, os.PathLike)):
        path = os.fspath(answers)
        located = ((f"{path}:{line}", record) for line, record in iter_jsonl(path))
    else:
        located = ((f"answer record {index}", record) for index, record in enumerate(answers, start=1))
    by_id: dict = {}
    where: dict = {}
    for location, record in located:
        for field in ("question_id", "text"):
            if field not in record:
                raise JsonlError(f"{location}: answer lacks field {field!r}")
        qid = record["question_id"]
        if qid in by_id:
            raise PopeJoinError(f"{location}: duplicate answer for question_id {qid!r} (first at {where[qid]})")
        by_id[qid] = record
        where[qid] = location
    return by_id


def check_answer_coverage(questions: dict, answers: dict, allow_partial: bool) -> None:
    """Every question answered and every answer a question, unless partial runs are allowed."""
    missing = [qid for qid in questions if qid not in answers]
    extra = [qid for qid in answers if qid not in questions]
    problems = []
    if missing:
        problems.append(f"{len(missing)} question(s) without an answer: question_id {format_ids(missing)}")
    if extra:
        problems.append(f"{len(extra)} answer(s) whose question_id is not a question: {format_ids(extra)}")
    if not problems:
        return
    if not allow_partial:
        raise PopeJoinError("; ".join(problems) + " (use --allow-partial to evaluate the answered questions)")
    if extra:
        # Missing answers show in the coverage; answers to unknown questions would go unseen.
        warnings.warn(f"ignoring {problems[-1]}", stacklevel=3)


class LabelIndex:
    """One split's label records, by the split's own id and by (image, text)."""

    def __init__(self, path: str):
        self.path = path
        self.by_id: dict = {}
        self.by_content: dict = {}
        for record in read_label_file(path):
            self.by_id[record["question_id"]] = record
            self.by_content.setdefault((record["image"], record["text"]), []).append(record)

    def find(self, question: dict, category: str) -> dict:
        """The label record of `question`: by offset id when it agrees, else by (image, text)."""
        qid, image = question["question_id"], question["image"]
        text = strip_answer_suffix(question["text"])
        offset = CATEGORY_OFFSETS.get(category)
        if offset is not None and isinstance(qid, int):
            record = self.by_id.get(qid - offset)
            if record is not None and record["image"] == image and record["text"] == text:
                return record
        # A question file numbered another way: the content is the only safe key.
        matches = self.by_content.get((image, text), [])
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise PopeJoinError(
                f"question_id {qid!r} ({category}): image {image!r} and text {text!r} match several "
                f"records of {self.path} (question_id {format_ids(m['question_id'] for m in matches)})"
            )
        own_id = f"question_id {qid - offset}" if offset is not None and isinstance(qid, int) else "its id"
        raise PopeJoinError(
            f"question_id {qid!r} ({category}): no label in {self.path} — neither {own_id} with the same "
            f"image and text nor any record with image {image!r} and text {text!r}"
        )


def label_value(record: dict, path: str) -> str:
    label = str(record["label"]).strip().lower()
    if label not in ("yes", "no"):
        raise PopeJoinError(f"{path}: question_id {record['question_id']!r} has label {record['label']!r}, not yes/no")
    return label


def join_pope(
    annotation_dir: str, question_file: str, answers, allow_partial: bool = False
) -> tuple[list[PopeRecord], dict]:
    """Join answers, questions and POPE labels by id.

    `answers` is a result-file path or already-loaded answer records. Returns the answered
    questions' records in question-file order, and {category: {"answered": a, "total": t}}.
    """
    questions = read_keyed_jsonl(os.fspath(question_file), required=("image", "text", "category"))
    answer_by_id = load_answers(answers)
    check_answer_coverage(questions, answer_by_id, allow_partial)

    categories = category_order(q["category"] for q in questions.values())
    indexes = {c: LabelIndex(label_file_path(os.fspath(annotation_dir), c)) for c in categories}
    coverage = {c: {"answered": 0, "total": 0} for c in categories}

    records = []
    for qid, question in questions.items():
        category = question["category"]
        index = indexes[category]
        # Every question is joined to its label, answered or not: a question file that does
        # not belong to the annotations is an error even in a partial run.
        label = label_value(index.find(question, category), index.path)
        coverage[category]["total"] += 1
        if qid not in answer_by_id:
            continue
        coverage[category]["answered"] += 1
        answer = answer_by_id[qid]["text"]
        records.append(
            PopeRecord(
                question_id=qid,
                category=category,
                image=question["image"],
                question=question["text"],
                label=label,
                answer=answer,
                prediction=parse_yes_no(answer),
            )
        )
    return records, coverage


def ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else 0.0


def pope_metrics(records: list[PopeRecord]) -> dict:
    """Confusion counts and rates with "yes" as the positive class; empty divisions give 0.0."""
    tp = sum(r.prediction == "yes" and r.label == "yes" for r in records)
    fp = sum(r.prediction == "yes" and r.label == "no" for r in records)
    tn = sum(r.prediction == "no" and r.label == "no" for r in records)
    fn = sum(r.prediction == "no" and r.label == "yes" for r in records)
    precision = ratio(tp, tp + fp)
    recall = ratio(tp, tp + fn)
    return {
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "accuracy": ratio(tp + tn, len(records)),
        "precision": precision,
        "recall": recall,
        "f1": ratio(2 * precision * recall, precision + recall),
        "yes_ratio": ratio(tp + fp, len(records)),
        "n": len(records),
    }


def evaluate_pope(records: list[PopeRecord]) -> dict:
    """Metrics per category present (POPE order first) plus "mean_f1" over those categories."""
    results: dict = {}
    for category in category_order(r.category for r in records):
        results[category] = pope_metrics([r for r in records if r.category == category])
    f1s = [m["f1"] for m in results.values()]
    results["mean_f1"] = sum(f1s) / len(f1s) if f1s else 0.0
    return results


def print_category(category: str, metrics: dict) -> None:
    """The lines LLaVA's eval_pope prints for one split."""
    print(f"Category: {category}, # samples: {metrics['n']}")
    print("TP\tFP\tTN\tFN\t")
    print(f"{metrics['tp']}\t{metrics['fp']}\t{metrics['tn']}\t{metrics['fn']}")
    print(f"Accuracy: {metrics['accuracy']}")
    print(f"Precision: {metrics['precision']}")
    print(f"Recall: {metrics['recall']}")
    print(f"F1 score: {metrics['f1']}")
    print(f"Yes ratio: {metrics['yes_ratio']}")
    print(
        "%.3f, %.3f, %.3f, %.3f, %.3f"
        % (metrics["f1"], metrics["accuracy"], metrics["precision"], metrics["recall"], metrics["yes_ratio"])
    )
    print(SEPARATOR)


def json_summary(results: dict) -> dict:
    """{category: {tp, fp, tn, fn, accuracy, precision, recall, f1, yes_ratio}, "mean_f1": x}."""
    summary = {c: {k: m[k] for k in METRIC_KEYS} for c, m in results.items() if c != "mean_f1"}
    summary["mean_f1"] = results["mean_f1"]
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = new_parser(__doc__)
    parser.add_argument("--annotation-dir", required=True, help="folder with coco_pope_<category>.json")
    parser.add_argument("--question-file", required=True, help="the LLaVA question jsonl that was answered")
    parser.add_argument("--result-file", required=True, help="LLaVA answers jsonl")
    parser.add_argument(
        "--allow-partial", action="store_true", help="evaluate the answered questions only and print the coverage"
    )
    parser.add_argument("--output-json", default=None, help="write the metrics per category and the mean F1")
    args = parser.parse_args(argv)

    records, coverage = join_pope(args.annotation_dir, args.question_file, args.result_file, args.allow_partial)
    if args.allow_partial:
        print("Coverage (answered/total):")
        for category, counts in coverage.items():
            print(f"  {category}: {counts['answered']}/{counts['total']}")
    results = evaluate_pope(records)
    categories = [c for c in results if c != "mean_f1"]
    for category in categories:
        print_category(category, results[category])
    print(f"Mean F1 over {len(categories)} splits ({', '.join(categories)}): {results['mean_f1']:.3f}")

    summary = json_summary(results)
    if args.output_json:
        write_json_atomic(args.output_json, summary)
        print(f"wrote {args.output_json}", file=sys.stderr)
    return summary


if __name__ == "__main__":
    sys.exit(run_main(main))
