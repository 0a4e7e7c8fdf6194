"""Stage 3: join uncertainty scores with POPE correctness and report how well they flag errors.

    python -m semantic_entropy.eval_auroc --uncertainty-file U [U2 ...] --answers-file A \\
        --annotation-dir D --question-file Q --output-dir O \\
        [--labels L1 L2 ...] [--measures NAME ...] [--bootstrap 1000] [--seed 0] \\
        [--confidence 0.95] [--coverages 0.8 0.9 0.95] [--allow-partial] [--no-plots]

The greedy answers (A) are joined with the questions and POPE labels by `join_pope`, the one
join of `llava.eval.eval_pope`; `is_false` = 1 where the answer, parsed as eval_pope parses it,
is wrong. Each uncertainty file (stage 2: one line per question with `question_id`,
`category` and `scores`) must hold exactly the answered question_ids, once each.

Per POPE split (adversarial, random, popular, in that order, then "all"): n, errors, accuracy,
error rate, and for every measure of every file AUROC, AUPR of the errors, AURAC, PRR and
accuracy at each coverage (see `semantic_entropy.evaluation.metrics`), each with a percentile bootstrap
interval that resamples the split's questions (the same resamples for every measure, seeded
by --seed and the split). A metric that has no value on a split (e.g. every answer right) is
"n/a" with the reason.

Several files go into one comparison: a column is named by the measure alone when there is one
file, else "label/measure" (label: --labels, default each file's stem). Writes to O:
metrics.json ({split: {n, n_errors, accuracy, error_rate, <column>: {metric: {value, ci_low,
ci_high[, reason]}}}}), metrics.csv (one row per split and column), metrics.md (also printed),
per_question.csv (the join: label, parsed answer, is_false and scores of each question),
roc_curves.png, rejection_curves.png, score_distributions.png, and manifest.json.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from llava.eval.eval_pope import PopeJoinError, PopeRecord, category_order, format_ids, join_pope
from llava.jsonl_io import JsonlError, read_keyed_jsonl, write_json_atomic
from semantic_entropy.evaluation import metrics as m
from semantic_entropy.runs.manifest import describe_inputs, new_manifest, write_manifest
from semantic_entropy.evaluation import plots

ALL_SPLIT = "all"
SPLIT_STATS = ("n", "n_errors", "accuracy", "error_rate", "accuracy_ci_low", "accuracy_ci_high")
METRIC_TITLES = {"auroc": "AUROC", "aupr": "AUPR (errors)", "aurac": "AURAC", "prr": "PRR"}


# ---- joining -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreColumn:
    key: str  # "measure" (one run) or "label/measure"
    label: str
    measure: str
    values: np.ndarray  # (n,) aligned with JoinedScores.question_ids


@dataclass(frozen=True)
class JoinedScores:
    question_ids: list
    categories: np.ndarray  # (n,) POPE split of each question
    is_false: np.ndarray  # (n,) 1 where the greedy answer is wrong
    columns: list[ScoreColumn]


def default_labels(paths: Sequence[str]) -> list[str]:
    """Each file's stem; where stems repeat, the parent folder's name joined to the stem.

    >>> default_labels(["runs/a/uncertainty.jsonl", "runs/b/uncertainty.jsonl", "x/nli.jsonl"])
    ['a_uncertainty', 'b_uncertainty', 'nli']
    """
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    labels = [
        f"{os.path.basename(os.path.dirname(os.path.abspath(p)))}_{stem}" if stems.count(stem) > 1 else stem
        for p, stem in zip(paths, stems)
    ]
    return labels


def check_labels(labels: Sequence[str], paths: Sequence[str]) -> None:
    if len(labels) != len(paths):
        raise ValueError(f"{len(labels)} label(s) for {len(paths)} uncertainty file(s); give one label per file")
    for label in labels:
        if not label or "/" in label:
            raise ValueError(f"label {label!r} must be non-empty and without '/' (it names columns 'label/measure')")
    repeated = sorted({label for label in labels if list(labels).count(label) > 1})
    if repeated:
        raise ValueError(f"labels {repeated} name more than one uncertainty file; pass distinct --labels")


def check_same_ids(records: Sequence[PopeRecord], uncertainty: dict, path: str) -> None:
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


def check_categories(records: Sequence[PopeRecord], uncertainty: dict, path: str) -> None:
    """A category written by stage 2 must agree with the question file's."""
    wrong = [r.question_id for r in records
             if uncertainty[r.question_id].get("category") not in (None, r.category)]
    if wrong:
        first = next(r for r in records if r.question_id == wrong[0])
        raise PopeJoinError(
            f"{path}: category differs from the question file for question_id {format_ids(wrong)} "
            f"(e.g. {wrong[0]!r}: {uncertainty[wrong[0]]['category']!r} vs {first.category!r})"
        )


def measure_names(uncertainty: dict) -> list[str]:
    """Every measure named in the file's scores, in first-seen order."""
    names: dict[str, None] = {}
    for record in uncertainty.values():
        if not isinstance(record["scores"], dict):
            raise JsonlError(f"question_id {record['question_id']!r}: scores must be a mapping, got {record['scores']!r}")
        names.update(dict.fromkeys(record["scores"]))
    return list(names)


def score_values(records: Sequence[PopeRecord], uncertainty: dict, measure: str, path: str) -> np.ndarray:
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


def join_scores(
    records: Sequence[PopeRecord],
    uncertainty_files: Sequence[str],
    labels: Sequence[str],
    measures: Sequence[str] | None = None,
) -> JoinedScores:
    """Score columns of every file aligned with the joined POPE records (question-file order)."""
    check_labels(labels, uncertainty_files)
    if not records:
        raise PopeJoinError("no answered questions to evaluate")
    one_run = len(uncertainty_files) == 1
    columns: list[ScoreColumn] = []
    found: set[str] = set()
    for path, label in zip(uncertainty_files, labels):
        uncertainty = read_keyed_jsonl(path, required=("scores",))
        check_same_ids(records, uncertainty, path)
        check_categories(records, uncertainty, path)
        names = measure_names(uncertainty)
        if measures is not None:
            names = [name for name in measures if name in names]
        found.update(names)
        for measure in names:
            key = measure if one_run else f"{label}/{measure}"
            if key in SPLIT_STATS:
                raise ValueError(f"{path}: measure name {measure!r} clashes with a split statistic; pass --labels")
            columns.append(ScoreColumn(key, label, measure, score_values(records, uncertainty, measure, path)))
    if measures is not None:
        unknown = [name for name in measures if name not in found]
        if unknown:
            raise ValueError(f"--measures {unknown} are in none of the uncertainty files {list(uncertainty_files)}")
    if not columns:
        raise ValueError(f"no measures to evaluate in {list(uncertainty_files)}")
    return JoinedScores(
        question_ids=[r.question_id for r in records],
        categories=np.array([r.category for r in records]),
        is_false=np.array([0.0 if r.is_correct else 1.0 for r in records]),
        columns=columns,
    )


def split_masks(categories: np.ndarray) -> dict[str, np.ndarray]:
    """The boolean mask of each POPE split present (LLaVA's order), then "all"."""
    masks = {category: categories == category for category in category_order(categories.tolist())}
    masks[ALL_SPLIT] = np.ones(len(categories), dtype=bool)
    return masks


# ---- evaluation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalSettings:
    n_resamples: int = 1000  # 0: no intervals
    seed: int = 0
    confidence: float = 0.95
    coverages: tuple[float, ...] = m.DEFAULT_COVERAGES


def metric_vector(results: dict[str, float | str], names: Sequence[str]) -> list[float]:
    """Metric values in `names` order, NaN where undefined (a reason string)."""
    return [value if isinstance(value, float) else np.nan for value in (results[name] for name in names)]


def interval_field(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def evaluate_split(is_false: np.ndarray, scores: dict[str, np.ndarray], settings: EvalSettings,
                   split_seed: Sequence[int]) -> dict:
    """{n, n_errors, accuracy, error_rate, accuracy_ci_*, column: {metric: {value, ci_low, ci_high[, reason]}}}."""
    names = m.metric_names(settings.coverages)
    groups = {key: m.tie_groups(is_false, values) for key, values in scores.items()}
    points = {key: m.metrics_of_groups(g, settings.coverages) for key, g in groups.items()}
    n = len(is_false)
    n_errors = int(is_false.sum())
    result: dict = {"n": n, "n_errors": n_errors, "accuracy": 1 - n_errors / n, "error_rate": n_errors / n,
                    "accuracy_ci_low": None, "accuracy_ci_high": None}

    interval = None
    if settings.n_resamples > 0:
        def statistic(indices: np.ndarray) -> list[float]:
            # Accuracy, then every metric of every column: one draw serves them all (paired).
            values = [1.0 - float(is_false[indices].mean())]
            for g in groups.values():
                values.extend(metric_vector(m.metrics_of_groups(g.resample(indices), settings.coverages), names))
            return values

        interval = m.bootstrap_ci(statistic, n, settings.n_resamples, split_seed, settings.confidence)
        result["accuracy_ci_low"] = interval_field(interval.low[0])
        result["accuracy_ci_high"] = interval_field(interval.high[0])

    for column_index, (key, point) in enumerate(points.items()):
        entry = {}
        for metric_index, name in enumerate(names):
            value = point[name]
            if isinstance(value, str):
                entry[name] = {"value": None, "ci_low": None, "ci_high": None, "reason": value}
                continue
            cell = {"value": value, "ci_low": None, "ci_high": None}
            if interval is not None:
                position = 1 + column_index * len(names) + metric_index
                cell["ci_low"] = interval_field(interval.low[position])
                cell["ci_high"] = interval_field(interval.high[position])
                if cell["ci_low"] is None:
                    valid = int(interval.n_valid[position])
                    cell["ci_reason"] = (f"only {valid} of {settings.n_resamples} resamples had both right and wrong "
                                         f"answers")
            entry[name] = cell
        result[key] = entry
    return result


def evaluate(joined: JoinedScores, settings: EvalSettings) -> dict:
    """metrics.json: {split: evaluate_split(...)} for every POPE split present and "all"."""
    report = {}
    for split_index, (split, mask) in enumerate(split_masks(joined.categories).items()):
        scores = {column.key: column.values[mask] for column in joined.columns}
        report[split] = evaluate_split(joined.is_false[mask], scores, settings, (settings.seed, split_index))
    return report


# ---- reports -------------------------------------------------------------------------------


def column_keys(report: dict) -> list[str]:
    first = next(iter(report.values()))
    return [key for key in first if key not in SPLIT_STATS]


def metric_header(name: str) -> str:
    """The column title of a metric.

    >>> metric_header("acc_at_90"), metric_header("auroc")
    ('Acc@90%', 'AUROC')
    """
    if name.startswith("acc_at_"):
        return f"Acc@{name[len('acc_at_'):]}%"
    return METRIC_TITLES.get(name, name)


def three_decimals(value: float) -> str:
    """Three decimals, without the '-0.000' of a rounding error below zero.

    >>> three_decimals(-1e-17), three_decimals(0.71249)
    ('0.000', '0.712')
    """
    text = f"{value:.3f}"
    return "0.000" if text == "-0.000" else text


def format_cell(cell: dict) -> str:
    """'0.712 [0.650, 0.770]', '0.712' without an interval, 'n/a' when undefined.

    >>> format_cell({"value": 0.7123, "ci_low": 0.65, "ci_high": 0.77})
    '0.712 [0.650, 0.770]'
    >>> format_cell({"value": None, "ci_low": None, "ci_high": None, "reason": "every answer is correct"})
    'n/a'
    """
    if cell["value"] is None:
        return "n/a"
    text = three_decimals(cell["value"])
    if cell["ci_low"] is not None:
        text += f" [{three_decimals(cell['ci_low'])}, {three_decimals(cell['ci_high'])}]"
    elif "ci_reason" in cell:
        text += " [n/a]"
    return text


def split_heading(split: str, stats: dict) -> str:
    accuracy = f"{stats['accuracy']:.3f}"
    if stats.get("accuracy_ci_low") is not None:
        accuracy += f" [{stats['accuracy_ci_low']:.3f}, {stats['accuracy_ci_high']:.3f}]"
    return (f"### {split}: n = {stats['n']}, accuracy {accuracy}, errors {stats['n_errors']} "
            f"(error rate {stats['error_rate']:.3f})")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def markdown_report(report: dict, columns: Sequence[ScoreColumn], settings: EvalSettings, title: str) -> str:
    """The comparison table (AUROC per split), then every metric per split, with n/a reasons."""
    one_run = len({c.label for c in columns}) == 1
    row_names = [[c.measure] if one_run else [c.label, c.measure] for c in columns]
    name_header = ["measure"] if one_run else ["run", "measure"]
    splits = list(report)
    if settings.n_resamples > 0:
        intervals = (f"{100 * settings.confidence:g}% percentile bootstrap intervals over "
                     f"{settings.n_resamples} resamples of each split's questions (seed {settings.seed})")
    else:
        intervals = "no intervals (--bootstrap 0)"
    lines = [f"# {title}", "",
             "Errors are the positives (`y_true` = greedy answer wrong, `y_score` = uncertainty); "
             f"{intervals}.", "", "## AUROC by split", ""]
    rows = [names + [format_cell(report[s][c.key]["auroc"]) for s in splits] for names, c in zip(row_names, columns)]
    lines += markdown_table(name_header + splits, rows)

    metric_keys = m.metric_names(settings.coverages)
    for split in splits:
        stats = report[split]
        lines += ["", split_heading(split, stats), ""]
        rows = [names + [format_cell(stats[c.key][k]) for k in metric_keys] for names, c in zip(row_names, columns)]
        lines += markdown_table(name_header + [metric_header(k) for k in metric_keys], rows)
        reasons = dict.fromkeys(cell["reason"] for c in columns for cell in stats[c.key].values() if "reason" in cell)
        reasons.update(dict.fromkeys(f"interval: {cell['ci_reason']}" for c in columns
                                     for cell in stats[c.key].values() if "ci_reason" in cell))
        if reasons:
            lines += [""] + [f"- n/a: {reason}" for reason in reasons]
    return "\n".join(lines) + "\n"


def csv_rows(report: dict, columns: Sequence[ScoreColumn], coverages: Sequence[float]) -> list[dict]:
    """One row per (split, column): split stats, then value/ci_low/ci_high of each metric, and notes."""
    rows = []
    for split, stats in report.items():
        for column in columns:
            row = {"split": split, "run": column.label, "measure": column.measure,
                   **{k: stats[k] for k in ("n", "n_errors", "accuracy", "error_rate")}}
            notes = []
            for name in m.metric_names(coverages):
                cell = stats[column.key][name]
                row[name], row[f"{name}_ci_low"], row[f"{name}_ci_high"] = cell["value"], cell["ci_low"], cell["ci_high"]
                if "reason" in cell:
                    notes.append(f"{name}: {cell['reason']}")
            row["notes"] = "; ".join(notes)
            rows.append(row)
    return rows


def write_csv(path: str, rows: Sequence[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def per_question_rows(records: Sequence[PopeRecord], joined: JoinedScores) -> list[dict]:
    """The join itself, one row per question: ids, label, parsed answer, is_false and every score."""
    return [
        {"question_id": r.question_id, "category": r.category, "label": r.label, "prediction": r.prediction,
         "is_false": int(is_false), "answer": r.answer, **{c.key: float(c.values[i]) for c in joined.columns}}
        for i, (r, is_false) in enumerate(zip(records, joined.is_false))
    ]


def plotted_columns(joined: JoinedScores, max_curves: int) -> list[ScoreColumn]:
    """The columns drawn as curves: all when at most `max_curves`, else the best by AUROC over all questions.

    A legend of dozens of curves hides the panels; the tables always hold every column.
    """
    if len(joined.columns) <= max_curves:
        return list(joined.columns)

    def overall_auroc(column: ScoreColumn) -> float:
        try:
            return m.auroc(joined.is_false, column.values)
        except m.UndefinedMetricError:
            return float("-inf")

    return sorted(joined.columns, key=overall_auroc, reverse=True)[:max_curves]


def write_plots(output_dir: str, joined: JoinedScores, max_curves: int = 10) -> list[str]:
    curves = plotted_columns(joined, max_curves)
    if len(curves) < len(joined.columns):
        print(f"curve figures: the {len(curves)} columns with the highest AUROC over all questions "
              f"(--max-curves; every column is in the tables and score_distributions.png)")
    masks = split_masks(joined.categories)
    splits = [plots.SplitScores(split, joined.is_false[mask], {c.key: c.values[mask] for c in curves})
              for split, mask in masks.items()]
    everything = plots.SplitScores(ALL_SPLIT, joined.is_false, {c.key: c.values for c in joined.columns})
    return [
        plots.plot_roc_curves(splits, os.path.join(output_dir, "roc_curves.png")),
        plots.plot_rejection_curves(splits, os.path.join(output_dir, "rejection_curves.png")),
        plots.plot_score_distributions(everything, os.path.join(output_dir, "score_distributions.png")),
    ]


# ---- command line --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uncertainty-file", nargs="+", required=True, metavar="U",
                        help="stage-2 uncertainty JSON lines; several files go into one comparison")
    parser.add_argument("--answers-file", required=True, help="greedy answers in LLaVA's format (stage 1)")
    parser.add_argument("--annotation-dir", required=True, help="folder with coco_pope_<split>.json")
    parser.add_argument("--question-file", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--labels", nargs="+", default=None, help="one run label per uncertainty file (default: stems)")
    parser.add_argument("--measures", nargs="+", default=None, metavar="NAME",
                        help="score names to evaluate (default: every score in the files)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples per split; 0 = no intervals")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    parser.add_argument("--coverages", type=float, nargs="+", default=list(m.DEFAULT_COVERAGES),
                        help="report the accuracy of the most certain fraction at each (default 0.8 0.9 0.95)")
    parser.add_argument("--allow-partial", action="store_true",
                        help="evaluate only the answered questions of the question file")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    parser.add_argument("--max-curves", type=int, default=10,
                        help="curves per ROC / rejection panel: the columns with the highest overall AUROC")
    parser.add_argument("--title", default="Uncertainty vs POPE correctness", help="heading of metrics.md")
    args = parser.parse_args(argv)
    if args.bootstrap < 0:
        parser.error("--bootstrap must be >= 0")
    if not 0 < args.confidence < 1:
        parser.error("--confidence must be in (0, 1)")
    if any(not 0 < c <= 1 for c in args.coverages):
        parser.error("--coverages must be in (0, 1]")
    return args


def run(args: argparse.Namespace) -> dict:
    """Join, evaluate and write every report; returns the metrics.json content."""
    labels = args.labels if args.labels is not None else default_labels(args.uncertainty_file)
    check_labels(labels, args.uncertainty_file)
    settings = EvalSettings(args.bootstrap, args.seed, args.confidence, tuple(args.coverages))
    records, coverage = join_pope(args.annotation_dir, args.question_file, args.answers_file, args.allow_partial)
    joined = join_scores(records, args.uncertainty_file, labels, args.measures)
    report = evaluate(joined, settings)

    os.makedirs(args.output_dir, exist_ok=True)
    write_json_atomic(os.path.join(args.output_dir, "metrics.json"), report)
    write_csv(os.path.join(args.output_dir, "metrics.csv"), csv_rows(report, joined.columns, settings.coverages))
    write_csv(os.path.join(args.output_dir, "per_question.csv"), per_question_rows(records, joined))
    markdown = markdown_report(report, joined.columns, settings, args.title)
    with open(os.path.join(args.output_dir, "metrics.md"), "w", encoding="utf-8") as f:
        f.write(markdown)
    print(markdown)
    figures = [] if args.no_plots else write_plots(args.output_dir, joined, args.max_curves)

    upstream = [p + ".manifest.json" for p in [args.answers_file, *args.uncertainty_file]]
    manifest = new_manifest(
        "semantic_entropy.eval_auroc", args.output_dir, {**vars(args), "labels": labels},
        describe_inputs({"answers_file": args.answers_file, "question_file": args.question_file,
                         **{f"uncertainty_file_{i}": p for i, p in enumerate(args.uncertainty_file)}}),
        details={"annotation_dir": os.path.abspath(args.annotation_dir),
                 "upstream_manifests": [os.path.abspath(p) for p in upstream if os.path.exists(p)],
                 "coverage": coverage,
                 "columns": {c.key: {"label": c.label, "measure": c.measure} for c in joined.columns},
                 "outputs": ["metrics.json", "metrics.csv", "metrics.md", "per_question.csv",
                             *(os.path.basename(p) for p in figures)]})
    manifest["status"] = "complete"
    write_manifest(os.path.join(args.output_dir, "manifest.json"), manifest)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except (JsonlError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
