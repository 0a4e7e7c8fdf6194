"""Uncertainty distributions: what stage 3 can say about scores when no answer has a label.

Open-ended question files (LLaVA-Bench, MM-Vet style, captions: `question_id`, `image`,
`text`, no labels) give scores but no correctness, so AUROC and its kin are undefined. What
remains is how each score is distributed: per measure and split, n, mean, standard
deviation, min, quantiles, max and a histogram. The histogram's bin edges are shared by every
split of one column (computed on all its questions), so the splits' counts compare bin by
bin; with labels the same summary sits beside the metrics.

`join_unlabelled` aligns the score columns of one or more stage-2 files by question_id, with
the question file's order and categories when one is given; every mismatch is an error
naming the ids, as in `joining`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from llava.eval.eval_pope import PopeJoinError, category_order, format_ids
from llava.jsonl_io import JsonlError
from semantic_entropy.evaluation.joining import ScoreColumn, check_labels, measure_columns

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
ALL = "all"
NO_CATEGORY = "uncategorised"


@dataclass(frozen=True)
class ScoredQuestions:
    question_ids: list
    categories: np.ndarray  # (n,) the question's category, NO_CATEGORY when it has none
    columns: list[ScoreColumn]


def histogram_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """`bins` + 1 equal-width edges over the values' range (a unit range around a constant).

    >>> histogram_edges(np.array([0.0, 1.0, 2.0]), 4).tolist()
    [0.0, 0.5, 1.0, 1.5, 2.0]
    >>> histogram_edges(np.array([3.0, 3.0]), 2).tolist()
    [2.5, 3.0, 3.5]
    """
    low, high = float(np.min(values)), float(np.max(values))
    if low == high:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, bins + 1)


def summarise(values: np.ndarray, edges: np.ndarray) -> dict:
    """n, mean, std (population), min, quantiles q05..q95 (linear interpolation), max and the
    histogram counts over `edges` (the last bin closed on the right).

    >>> s = summarise(np.array([0.0, 1.0, 1.0, 4.0]), np.array([0.0, 2.0, 4.0]))
    >>> s["n"], s["mean"], s["std"], s["q50"], s["histogram"]["counts"]
    (4, 1.5, 1.5, 1.0, [3, 1])
    >>> s["q25"], s["q75"]
    (0.75, 1.75)
    """
    counts, _ = np.histogram(values, bins=edges)
    summary = {"n": int(len(values)), "mean": float(np.mean(values)), "std": float(np.std(values)),
               "min": float(np.min(values))}
    for q in QUANTILES:
        summary[f"q{round(q * 100):02d}"] = float(np.quantile(values, q))
    summary["max"] = float(np.max(values))
    summary["histogram"] = {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}
    return summary


def split_masks(categories: np.ndarray) -> dict[str, np.ndarray]:
    """"all", then one mask per category present (POPE's order first), unless there is only one
    category and it is NO_CATEGORY."""
    masks = {ALL: np.ones(len(categories), dtype=bool)}
    present = category_order(categories.tolist())
    if present != [NO_CATEGORY]:
        for category in present:
            masks[category] = categories == category
    return masks


def distributions(scored: ScoredQuestions, bins: int = 20) -> dict:
    """{split: {"n": n, column key: summary}} for "all" and every category present."""
    masks = split_masks(scored.categories)
    edges = {column.key: histogram_edges(column.values, bins) for column in scored.columns}
    report = {}
    for split, mask in masks.items():
        entry: dict = {"n": int(mask.sum())}
        for column in scored.columns:
            entry[column.key] = summarise(column.values[mask], edges[column.key])
        report[split] = entry
    return report


def _column_values(ids: Sequence, uncertainty: Mapping, measure: str, path: str) -> np.ndarray:
    """(n,) the measure's score of each id; absent or non-finite -> error naming the ids."""
    absent = [qid for qid in ids if uncertainty[qid]["scores"].get(measure) is None]
    if absent:
        raise JsonlError(f"{path}: measure {measure!r} is missing for question_id {format_ids(absent)}; "
                         "rerun stage 2 for them or leave the measure out with --measures")
    try:
        values = np.array([uncertainty[qid]["scores"][measure] for qid in ids], dtype=float)
    except (TypeError, ValueError) as error:
        raise JsonlError(f"{path}: measure {measure!r} has a non-numeric score ({error})") from None
    bad = [qid for qid, v in zip(ids, values) if not np.isfinite(v)]
    if bad:
        raise JsonlError(f"{path}: measure {measure!r} is not finite for question_id {format_ids(bad)}")
    return values


def join_unlabelled(sources: Sequence[tuple[str, Mapping]], labels: Sequence[str], measures: Sequence[str] | None,
                    questions: Mapping | None = None, allow_partial: bool = False) -> ScoredQuestions:
    """Score columns of every source on the same questions.

    With `questions` ({question_id: question record}, the question file): the question file's
    order and categories, every source scoring exactly its questions (a subset with
    `allow_partial`; a scored id that is no question is always an error). Without: the first
    source's order and categories, and every other source scoring the same ids.
    """
    paths = [path for path, _ in sources]
    check_labels(labels, paths)
    first_path, first = sources[0]
    if questions is not None:
        ids = [qid for qid in questions if all(qid in u for _, u in sources)] if allow_partial else list(questions)
        category_of = {qid: questions[qid].get("category") for qid in ids}
        reference, what = set(questions), "the question file's"
    else:
        ids = list(first)
        category_of = {qid: first[qid].get("category") for qid in ids}
        reference, what = set(ids), f"{first_path}'s"
    if not ids:
        raise PopeJoinError(f"no questions scored in every one of {paths}")
    for path, uncertainty in sources:
        partial = allow_partial and questions is not None
        missing = [] if partial else [qid for qid in reference if qid not in uncertainty]
        extra = [qid for qid in uncertainty if qid not in reference]
        problems = []
        if missing:
            problems.append(f"{len(missing)} of {what} question(s) without scores: question_id "
                            f"{format_ids(sorted(missing, key=str))}")
        if extra:
            problems.append(f"{len(extra)} scored question_id(s) not among {what} questions: {format_ids(extra)}")
        if problems:
            hint = " (use --allow-partial to summarise the scored questions)" if missing and questions is not None \
                else ""
            raise PopeJoinError(f"{path}: " + "; ".join(problems) + hint)

    columns = measure_columns(sources, labels, measures, lambda path, uncertainty, measure: _column_values(
        ids, uncertainty, measure, path), "summarise")
    categories = np.array([str(category_of[qid]) if category_of[qid] is not None else NO_CATEGORY for qid in ids])
    return ScoredQuestions(ids, categories, columns)


def _number(value: float) -> str:
    return f"{value:.3f}"


def markdown_distributions(report: dict, columns: Sequence[ScoreColumn], title: str) -> str:
    """One table per split: a row per column with n, mean, std, min, quantiles, max."""
    lines = [f"# {title}", ""]
    header = ["score", "n", "mean", "std", "min", *(f"q{round(q * 100):02d}" for q in QUANTILES), "max"]
    for split, entry in report.items():
        lines += [f"## {split} (n={entry['n']})", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        for column in columns:
            s = entry[column.key]
            cells = [column.key, str(s["n"]), *(_number(s[k]) for k in header[2:])]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def per_question_scores(scored: ScoredQuestions) -> list[dict]:
    """per_question.csv without labels: each question's id, the split it counts in and its scores.

    >>> per_question_scores(ScoredQuestions([7], np.array([NO_CATEGORY]), [ScoreColumn("se", "r", "se", np.ones(1))]))
    [{'question_id': 7, 'category': 'uncategorised', 'se': 1.0}]
    """
    return [{"question_id": qid, "category": str(category), **{c.key: float(c.values[i]) for c in scored.columns}}
            for i, (qid, category) in enumerate(zip(scored.question_ids, scored.categories))]


def csv_rows(report: dict, columns: Sequence[ScoreColumn]) -> list[dict]:
    """One row per (split, column): the summary without the histogram."""
    rows = []
    for split, entry in report.items():
        for column in columns:
            summary = {k: v for k, v in entry[column.key].items() if k != "histogram"}
            rows.append({"split": split, "column": column.key, "label": column.label, "measure": column.measure,
                         **summary})
    return rows
