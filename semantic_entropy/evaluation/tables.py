"""The human- and spreadsheet-readable forms of metrics.json: metrics.md, metrics.csv, per_question.csv.

metrics.md holds, in order: AUROC of every column by split; the paired AUROC difference of
every column from the reference by split, with Holm-adjusted p-values; then per split every
metric and every paired difference. Holm's adjustment runs over the columns of one table
column (one split and one metric): the family a reader scans when asking "which measures
differ from the reference here".
"""

from __future__ import annotations

from collections.abc import Sequence

from llava.eval.eval_pope import PopeRecord
from semantic_entropy.evaluation import metrics as m
from semantic_entropy.evaluation.joining import SPLIT_KEYS, JoinedScores, ScoreColumn
from semantic_entropy.evaluation.paired import holm
from semantic_entropy.evaluation.report import PAIRED_METRICS, EvalSettings
from semantic_entropy.evaluation.splits import SPLIT_NOTES

METRIC_TITLES = {"auroc": "AUROC", "aupr": "AUPR (errors)", "aurac": "AURAC", "prr": "PRR"}
UNIT_NAMES = {"image": "images", "question": "questions"}


def column_keys(report: dict) -> list[str]:
    """The score columns of a metrics.json, in order.

    >>> column_keys({"all": {"n": 3, "n_errors": 1, "paired": {}, "semantic_entropy": {}}})
    ['semantic_entropy']
    """
    first = next(iter(report.values()))
    return [key for key in first if key not in SPLIT_KEYS]


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


def format_p(p: float, n_resamples: int) -> str:
    """'p=0.012', or 'p<0.001' for 0 (no resample on the other side of 0) with 1,000 resamples.

    >>> format_p(0.0123, 1000), format_p(0.0, 1000), format_p(0.0, 200)
    ('p=0.012', 'p<0.001', 'p<0.005')
    """
    return f"p<{1 / n_resamples:.3g}" if p == 0 else f"p={p:.3f}"


def format_paired_cell(cell: dict, adjusted_p: float | None, n_resamples: int) -> str:
    """A paired difference with its interval and adjusted p-value; '*' where that p is below 0.05.

    >>> format_paired_cell({"value": -0.043, "ci_low": -0.062, "ci_high": -0.022, "p_value": 0.002}, 0.01, 1000)
    '-0.043 [-0.062, -0.022] p=0.010*'
    >>> format_paired_cell({"value": 0.004, "ci_low": None, "ci_high": None, "p_value": None}, None, 0)
    '0.004'
    """
    text = format_cell(cell)
    if cell["value"] is not None and adjusted_p is not None:
        text += " " + format_p(adjusted_p, n_resamples) + ("*" if adjusted_p < 0.05 else "")
    return text


def holm_by_column(split_report: dict, keys: Sequence[str], metric: str) -> dict[str, float | None]:
    """Holm-adjusted p-values of `metric`'s paired differences over the columns `keys` of one split."""
    paired = split_report.get("paired", {})
    present = [key for key in keys if key in paired]
    adjusted = holm([paired[key][metric]["p_value"] for key in present])
    return dict(zip(present, adjusted))


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


def bootstrap_note(report: dict, settings: EvalSettings) -> str:
    """The line under the first table naming the resampled unit and how many there are per split."""
    if settings.n_resamples == 0:
        return "No intervals (--bootstrap 0)."
    unit = UNIT_NAMES[settings.cluster_unit]
    counts = ", ".join(f"{split} {stats['n_units']}" for split, stats in report.items())
    kept = " and keeps every question of a drawn image" if settings.cluster_unit == "image" else ""
    return (f"Bootstrap unit: {settings.cluster_unit}. Each resample draws a split's {unit} with "
            f"replacement{kept} ({unit} per split: {counts}).")


def markdown_report(report: dict, columns: Sequence[ScoreColumn], settings: EvalSettings, title: str) -> str:
    """metrics.md: AUROC by split, paired AUROC differences by split, then every metric per split."""
    one_run = len({c.label for c in columns}) == 1
    row_names = {c.key: [c.measure] if one_run else [c.label, c.measure] for c in columns}
    name_header = ["measure"] if one_run else ["run", "measure"]
    splits = list(report)
    if settings.n_resamples > 0:
        intervals = (f"{100 * settings.confidence:g}% percentile bootstrap intervals over "
                     f"{settings.n_resamples} resamples of each split's {UNIT_NAMES[settings.cluster_unit]} "
                     f"(seed {settings.seed})")
    else:
        intervals = "no intervals (--bootstrap 0)"
    lines = [f"# {title}", "",
             ("Errors are the positives (`y_true` = greedy answer wrong, `y_score` = uncertainty); "
              f"{intervals}."), "", "## AUROC by split", ""]
    rows = [row_names[c.key] + [format_cell(report[s][c.key]["auroc"]) for s in splits] for c in columns]
    lines += markdown_table(name_header + splits, rows)
    lines += ["", bootstrap_note(report, settings)]
    notes = [f"{split}: {SPLIT_NOTES[split]}" for split in splits if split in SPLIT_NOTES]
    if notes:
        lines += ["Answer-direction splits: " + "; ".join(notes) + "."]

    reference = next((stats["paired_reference"] for stats in report.values() if stats.get("paired_reference")), None)
    compared = [c for c in columns if c.key != reference]
    if reference is not None and compared:
        explained = f"AUROC(measure) - AUROC({reference})"
        if settings.n_resamples > 0:
            explained += (f", with the {100 * settings.confidence:g}% percentile interval of the difference over "
                          f"the same resamples (paired)")
        lines += ["", f"## Paired AUROC difference from {reference}", "", explained + ".", ""]
        adjusted = {s: holm_by_column(report[s], [c.key for c in compared], "auroc") for s in splits}
        rows = [row_names[c.key] + [format_paired_cell(report[s]["paired"][c.key]["auroc"], adjusted[s].get(c.key),
                                                       settings.n_resamples) for s in splits] for c in compared]
        lines += markdown_table(name_header + splits, rows)
        if settings.n_resamples > 0:
            lines += ["", (f"p: two-sided paired bootstrap p-value, Holm-adjusted across the {len(compared)} "
                           f"measures of each column; * p < 0.05; p<{1 / settings.n_resamples:.3g}: no resample "
                           "on the other side of 0.")]

    metric_keys = m.metric_names(settings.coverages)
    for split in splits:
        stats = report[split]
        lines += ["", split_heading(split, stats), ""]
        if split in SPLIT_NOTES:
            lines += [f"({SPLIT_NOTES[split]}.)", ""]
        rows = [row_names[c.key] + [format_cell(stats[c.key][k]) for k in metric_keys] for c in columns]
        lines += markdown_table(name_header + [metric_header(k) for k in metric_keys], rows)
        reasons = dict.fromkeys(cell["reason"] for c in columns for cell in stats[c.key].values() if "reason" in cell)
        reasons.update(dict.fromkeys(f"interval: {cell['ci_reason']}" for c in columns
                                     for cell in stats[c.key].values() if "ci_reason" in cell))
        if reasons:
            lines += [""] + [f"- n/a: {reason}" for reason in reasons]
        if stats.get("paired_reference") and compared:
            adjusted = {k: holm_by_column(stats, [c.key for c in compared], k) for k in PAIRED_METRICS}
            rows = [row_names[c.key] + [format_paired_cell(stats["paired"][c.key][k], adjusted[k].get(c.key),
                                                           settings.n_resamples) for k in PAIRED_METRICS]
                    for c in compared]
            lines += ["", (f"Paired differences from {stats['paired_reference']} (measure - reference; "
                           "p Holm-adjusted across the measures of each column):"), ""]
            lines += markdown_table(name_header + [f"Δ{METRIC_TITLES[k].split(' ')[0]}" for k in PAIRED_METRICS], rows)
    return "\n".join(lines) + "\n"


def headline_lines(report: dict, splits: Sequence[str] = ("all", "adversarial")) -> list[str]:
    """A short plain-text table: AUROC with its interval on `splits`, one line per column.

    >>> cell = {"value": 0.75, "ci_low": 0.7, "ci_high": 0.8}
    >>> report = {"all": {"n": 4, "yes_no_entropy": {"auroc": cell}},
    ...           "adversarial": {"n": 2, "yes_no_entropy": {"auroc": cell}}}
    >>> print("\\n".join(headline_lines(report)))
    AUROC           all                   adversarial
    yes_no_entropy  0.750 [0.700, 0.800]  0.750 [0.700, 0.800]
    """
    splits = [split for split in splits if split in report]
    keys = column_keys(report)
    width = max([len("AUROC"), *map(len, keys)]) + 2
    cells = {(key, split): format_cell(report[split][key]["auroc"]) for key in keys for split in splits}
    cell_width = max([len(split) for split in splits] + [len(c) for c in cells.values()]) + 2
    lines = ["AUROC".ljust(width) + "".join(split.ljust(cell_width) for split in splits).rstrip()]
    for key in keys:
        lines.append(key.ljust(width) + "".join(cells[key, split].ljust(cell_width) for split in splits).rstrip())
    return lines


def csv_rows(report: dict, columns: Sequence[ScoreColumn], coverages: Sequence[float]) -> list[dict]:
    """One row per (split, column): split stats, each metric's value and interval, the paired
    differences from the reference (empty for the reference itself) with raw and Holm p, and notes."""
    rows = []
    for split, stats in report.items():
        reference = stats.get("paired_reference")
        compared = [c.key for c in columns if c.key != reference]
        adjusted = {k: holm_by_column(stats, compared, k) for k in PAIRED_METRICS}
        for column in columns:
            row = {"split": split, "run": column.label, "measure": column.measure,
                   **{k: stats[k] for k in ("n", "n_errors", "accuracy", "error_rate", "bootstrap_unit", "n_units")}}
            notes = []
            for name in m.metric_names(coverages):
                cell = stats[column.key][name]
                row[name], row[f"{name}_ci_low"], row[f"{name}_ci_high"] = cell["value"], cell["ci_low"], cell["ci_high"]
                if "reason" in cell:
                    notes.append(f"{name}: {cell['reason']}")
            row["reference"] = reference
            for name in PAIRED_METRICS:
                cell = stats.get("paired", {}).get(column.key, {}).get(name, {})
                row[f"d_{name}"] = cell.get("value")
                row[f"d_{name}_ci_low"], row[f"d_{name}_ci_high"] = cell.get("ci_low"), cell.get("ci_high")
                row[f"d_{name}_p"] = cell.get("p_value")
                row[f"d_{name}_p_holm"] = adjusted[name].get(column.key)
            row["notes"] = "; ".join(notes)
            rows.append(row)
    return rows


def per_question_rows(records: Sequence[PopeRecord], joined: JoinedScores) -> list[dict]:
    """The join, one row per question: everything the statistics read, so anyone can redo them.

    The image is the bootstrap's cluster, `prediction` (the answer parsed as eval_pope parses
    it) decides the direction splits, `is_false` is the label of every metric.
    """
    return [
        {"question_id": r.question_id, "category": r.category, "image": r.image, "label": r.label,
         "prediction": r.prediction, "is_false": int(is_false), "answer": r.answer,
         **{c.key: float(c.values[i]) for c in joined.columns}}
        for i, (r, is_false) in enumerate(zip(records, joined.is_false))
    ]
