"""Join stage 2's uncertainty scores with the POPE records of `llava.eval.eval_pope.join_pope`.

Each uncertainty source (one stage-2 file, already read: {question_id: record}) must score
exactly the answered questions, once each, with the question file's category. Every mismatch
is an error naming the ids. A column is named by the measure alone when there is one source,
else "label/measure".
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from llava.eval.eval_pope import PopeJoinError, PopeRecord, format_ids
from llava.jsonl_io import JsonlError

# Keys of a split's entry in metrics.json that are not score columns; a measure may not take them.
SPLIT_STATS = ("n", "n_errors", "accuracy", "error_rate", "accuracy_ci_low", "accuracy_ci_high")
SPLIT_KEYS = (*SPLIT_STATS, "bootstrap_unit", "n_units", "paired_reference", "paired")


@dataclass(frozen=True)
class ScoreColumn:
    key: str  # "measure" (one source) or "label/measure"
    label: str
    measure: str
    values: np.ndarray  # (n,) aligned with JoinedScores.question_ids


@dataclass(frozen=True)
class JoinedScores:
    question_ids: list
    categories: np.ndarray  # (n,) POPE split of each question
    is_false: np.ndarray  # (n,) 1 where the greedy answer is wrong
    columns: list[ScoreColumn]
    images: np.ndarray | None = None  # (n,) image of each question: the bootstrap's cluster
    predictions: np.ndarray | None = None  # (n,) greedy answer parsed as eval_pope parses it: "yes"/"no"

    def column(self, key: str) -> ScoreColumn:
        return next(column for column in self.columns if column.key == key)


def default_labels(paths: Sequence[str]) -> list[str]:
    """Each file's stem; where stems repeat, the parent folder's name joined to the stem.

    >>> default_labels(["runs/a/uncertainty.jsonl", "runs/b/uncertainty.jsonl", "x/nli.jsonl"])
    ['a_uncertainty', 'b_uncertainty', 'nli']
    """
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    return [
        f"{os.path.basename(os.path.dirname(os.path.abspath(p)))}_{stem}" if stems.count(stem) > 1 else stem
        for p, stem in zip(paths, stems)
    ]


def check_labels(labels: Sequence[str], paths: Sequence[str]) -> None:
    if len(labels) != len(paths):
        raise ValueError(f"{len(labels)} label(s) for {len(paths)} uncertainty file(s); give one label per file")
    for label in labels:
        if not label or "/" in label:
            raise ValueError(f"label {label!r} must be non-empty and without '/' (it names columns 'label/measure')")
    repeated = sorted({label for label in labels if list(labels).count(label) > 1})
    if repeated:
        raise ValueError(f"labels {repeated} name more than one uncertainty file; pass distinct --labels")


def check_same_ids(records: Sequence[PopeRecord], uncertainty: Mapping, path: str) -> None:
    """The uncertainty file scores exactly the answered questions; else an error naming the ids."""
    answered = [r.question_id for r in records]
    answered_set = set(answered)
    missing = [qid for qid in answered if qid not in uncertainty]
    extra = [qid for qid in uncertainty if qid not in answered_set]
    problems = []
    if missing:
        problems.append(f"{len(missing)} answered question(s) without scores: question_id {format_ids(missing)}")
    if extra:
        problems.append(f"{len(extra)} scored question_id(s) not among the answers: {format_ids(extra)}")
    if problems:
        raise PopeJoinError(f"{path}: " + "; ".join(problems))


def check_categories(records: Sequence[PopeRecord], uncertainty: Mapping, path: str) -> None:
    """A category written by stage 2 must agree with the question file's."""
    wrong = [r.question_id for r in records
             if uncertainty[r.question_id].get("category") not in (None, r.category)]
    if wrong:
        first = next(r for r in records if r.question_id == wrong[0])
        raise PopeJoinError(
            f"{path}: category differs from the question file for question_id {format_ids(wrong)} "
            f"(e.g. {wrong[0]!r}: {uncertainty[wrong[0]]['category']!r} vs {first.category!r})"
        )


def measure_names(uncertainty: Mapping) -> list[str]:
    """Every measure named in the file's scores, in first-seen order."""
    names: dict[str, None] = {}
    for record in uncertainty.values():
        if not isinstance(record["scores"], dict):
            raise JsonlError(f"question_id {record['question_id']!r}: scores must be a mapping, got {record['scores']!r}")
        names.update(dict.fromkeys(record["scores"]))
    return list(names)


def score_values(records: Sequence[PopeRecord], uncertainty: Mapping, measure: str, path: str) -> np.ndarray:
    """(n,) the measure's score of each answered question; absent or non-finite -> error naming ids."""
    absent = [r.question_id for r in records if uncertainty[r.question_id]["scores"].get(measure) is None]
    if absent:
        raise JsonlError(
            f"{path}: measure {measure!r} is missing for question_id {format_ids(absent)}; "
            f"rerun stage 2 for them or leave the measure out with --measures"
        )
    try:
        values = np.array([uncertainty[r.question_id]["scores"][measure] for r in records], dtype=float)
    except (TypeError, ValueError) as error:
        raise JsonlError(f"{path}: measure {measure!r} has a non-numeric score ({error})") from None
    bad = [r.question_id for r, v in zip(records, values) if not np.isfinite(v)]
    if bad:
        raise JsonlError(f"{path}: measure {measure!r} is not finite for question_id {format_ids(bad)}")
    return values


def measure_columns(sources: Sequence[tuple[str, Mapping]], labels: Sequence[str], measures: Sequence[str] | None,
                    values_of: Callable[[str, Mapping, str], np.ndarray], purpose: str) -> list[ScoreColumn]:
    """One column per (source, measure): every measure of each source, or those of `measures`;
    `values_of(path, uncertainty, measure)` reads a column's values. Keys are the measure names,
    prefixed by the source's label when there are several sources."""
    paths = [path for path, _ in sources]
    one_source = len(sources) == 1
    columns: list[ScoreColumn] = []
    found: set[str] = set()
    for (path, uncertainty), label in zip(sources, labels):
        names = measure_names(uncertainty)
        if measures is not None:
            names = [name for name in measures if name in names]
        found.update(names)
        for measure in names:
            key = measure if one_source else f"{label}/{measure}"
            if key in SPLIT_KEYS:
                raise ValueError(f"{path}: measure name {measure!r} clashes with a split statistic; pass --labels")
            columns.append(ScoreColumn(key, label, measure, values_of(path, uncertainty, measure)))
    if measures is not None:
        unknown = [name for name in measures if name not in found]
        if unknown:
            raise ValueError(f"--measures {unknown} are in none of the uncertainty files {paths}")
    if not columns:
        raise ValueError(f"no measures to {purpose} in {paths}")
    return columns


def join_scores(
    records: Sequence[PopeRecord],
    sources: Sequence[tuple[str, Mapping]],
    labels: Sequence[str],
    measures: Sequence[str] | None = None,
) -> JoinedScores:
    """Score columns of every source aligned with the joined POPE records (question-file order).

    `sources` are (path, {question_id: stage-2 record}) pairs; the path only names errors.
    """
    paths = [path for path, _ in sources]
    check_labels(labels, paths)
    if not records:
        raise PopeJoinError("no answered questions to evaluate")
    for path, uncertainty in sources:
        check_same_ids(records, uncertainty, path)
        check_categories(records, uncertainty, path)
    columns = measure_columns(sources, labels, measures, lambda path, uncertainty, measure: score_values(
        records, uncertainty, measure, path), "evaluate")
    return JoinedScores(
        question_ids=[r.question_id for r in records],
        categories=np.array([r.category for r in records]),
        is_false=np.array([0.0 if r.is_correct else 1.0 for r in records]),
        columns=columns,
        images=np.array([r.image for r in records]),
        predictions=np.array([r.prediction for r in records]),
    )


DEFAULT_REFERENCES = ("yes_no_entropy", "semantic_entropy")


def reference_column(columns: Sequence[ScoreColumn], requested: str | None) -> str | None:
    """The key of the column the others are compared with.

    `requested` may be a column key ("label/measure") or a measure name (the first source that
    has it). Without a request: yes_no_entropy when present, else semantic_entropy, else none.

    >>> cols = [ScoreColumn(k, "run", k, np.zeros(1)) for k in ("semantic_entropy", "p_true")]
    >>> reference_column(cols, None), reference_column(cols, "p_true")
    ('semantic_entropy', 'p_true')
    """
    def find(name: str) -> str | None:
        for column in columns:
            if name in (column.key, column.measure):
                return column.key
        return None

    if requested is not None:
        key = find(requested)
        if key is None:
            raise ValueError(f"--compare-to {requested!r} is not among the evaluated columns "
                             f"{[c.key for c in columns]}")
        return key
    for name in DEFAULT_REFERENCES:
        key = find(name)
        if key is not None:
            return key
    return None
