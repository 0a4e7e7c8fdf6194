"""The page's summary: stage 3's metrics.json as written, plus what metrics.md adds to it; or,
for a run without labels, stage 3's distributions.json as written.

The page draws its own tables and curves from this and the per-question scores; the one
derived number is Holm's adjustment of the paired p-values, computed by the same function as
metrics.md (`evaluation.tables.holm_by_column`) so that both show the same p.
"""

from __future__ import annotations

import json

from semantic_entropy.evaluation.distributions import ALL, QUANTILES
from semantic_entropy.evaluation.report import PAIRED_METRICS
from semantic_entropy.evaluation.splits import SPLIT_NOTES
from semantic_entropy.evaluation.tables import column_keys, holm_by_column, metric_header

# distributions.json's numbers of a column, in distributions.md's order.
DISTRIBUTION_STATISTICS = ("n", "mean", "std", "min", *(f"q{round(q * 100):02d}" for q in QUANTILES), "max")


def read_report(path: str, expected: str) -> dict:
    """A stage-3 JSON report keyed by split; anything else is a ValueError naming the file."""
    with open(path, encoding="utf-8") as f:
        try:
            report = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e.msg})") from None
    if not isinstance(report, dict) or not report:
        raise ValueError(f"{path}: expected {expected} (an object keyed by split)")
    return report


def summary_data(metrics_path: str) -> dict:
    """{report, columns, metrics, titles, holm, pairedMetrics, splitNotes} of one metrics.json."""
    report = read_report(metrics_path, "stage 3's metrics")
    columns = column_keys(report)
    first = next(iter(report.values()))
    metrics = list(first[columns[0]]) if columns else []
    holm = {}
    for split, stats in report.items():
        compared = [key for key in columns if key != stats.get("paired_reference")]
        holm[split] = {metric: holm_by_column(stats, compared, metric) for metric in PAIRED_METRICS}
    return {"report": report, "columns": columns, "metrics": metrics,
            "titles": {name: metric_header(name) for name in metrics}, "holm": holm,
            "pairedMetrics": list(PAIRED_METRICS), "splitNotes": SPLIT_NOTES}


def distributions_summary(distributions_path: str) -> dict:
    """{report, columns, statistics} of one distributions.json (stage 3 without labels)."""
    report = read_report(distributions_path, "stage 3's score distributions")
    if ALL not in report:
        raise ValueError(f"{distributions_path}: no '{ALL}' split; expected stage 3's score distributions")
    columns = [key for key in report[ALL] if key != "n"]
    return {"report": report, "columns": columns, "statistics": list(DISTRIBUTION_STATISTICS)}
