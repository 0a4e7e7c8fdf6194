"""metrics.json: every metric of every score column on every split, with cluster-bootstrap
intervals and paired differences from a reference column.

Per split (see `splits`), one set of B resamples of the split's clusters (images by default)
serves every column, seeded by (seed, split index): all columns see the same questions in a
resample, which is what makes their differences paired. A split's entry:

    {n, n_errors, accuracy, error_rate, accuracy_ci_low, accuracy_ci_high,
     bootstrap_unit, n_units,
     <column>: {metric: {value, ci_low, ci_high[, reason][, ci_reason]}},
     paired_reference: <column> or null,
     paired: {<column>: {metric: {value, ci_low, ci_high, p_value[, reason][, ci_reason]}}}}

`value` of a paired cell is the column's metric minus the reference's, the interval is the
percentile interval of that difference over the resamples, and `p_value` the two-sided
bootstrap p-value of `paired.bootstrap_p_values` (not adjusted; metrics.md adds Holm's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from semantic_entropy.evaluation import metrics as m
from semantic_entropy.evaluation.intervals import percentile_intervals
from semantic_entropy.evaluation.joining import JoinedScores
from semantic_entropy.evaluation.paired import bootstrap_p_values
from semantic_entropy.evaluation.resampling import cluster_indices, draw_clusters
from semantic_entropy.evaluation.splits import cluster_units, split_masks
from semantic_entropy.evaluation.weighted_metrics import rank_scores, resampled_metrics, weighted_metrics

PAIRED_METRICS = ("auroc", "aupr", "aurac", "prr")


@dataclass(frozen=True)
class EvalSettings:
    n_resamples: int = 1000  # 0: no intervals
    seed: int = 0
    confidence: float = 0.95
    coverages: tuple[float, ...] = m.DEFAULT_COVERAGES
    cluster_unit: str = "question"  # "image" or "question": what a resample draws
    reference: str | None = None  # column key the others are compared with


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _too_few(valid: int, n_resamples: int) -> str:
    return f"only {valid} of {n_resamples} resamples had both right and wrong answers"


def point_metrics(is_false: np.ndarray, values: np.ndarray, coverages: Sequence[float]) -> dict[str, float | str]:
    """Every metric on the split itself: a float, or the reason (a str) it is undefined.

    The numbers come from the resamples' own arithmetic (all weights 1), so that a point whose
    resamples all agree with it lies inside its interval exactly, not 1e-16 outside; the tests
    check that both arithmetics agree with `metrics`.
    """
    reference = m.metrics_of_groups(m.tie_groups(is_false, values), coverages)
    ones = np.ones((1, len(is_false)), dtype=np.int32)
    same_arithmetic = weighted_metrics(rank_scores(is_false, values), ones, coverages)
    return {name: value if isinstance(value, str) else float(same_arithmetic[name][0])
            for name, value in reference.items()}


def metric_cells(point: Mapping[str, float | str], low: np.ndarray | None, high: np.ndarray | None,
                 n_valid: np.ndarray | None, n_resamples: int) -> dict:
    """{metric: {value, ci_low, ci_high[, reason][, ci_reason]}} of one column; intervals in point's order."""
    cells = {}
    for index, (name, value) in enumerate(point.items()):
        if isinstance(value, str):
            cells[name] = {"value": None, "ci_low": None, "ci_high": None, "reason": value}
            continue
        cell = {"value": value, "ci_low": None, "ci_high": None}
        if low is not None:
            cell["ci_low"], cell["ci_high"] = _finite(low[index]), _finite(high[index])
            if cell["ci_low"] is None:
                cell["ci_reason"] = _too_few(int(n_valid[index]), n_resamples)
        cells[name] = cell
    return cells


def paired_cells(point: Mapping[str, float | str], reference: Mapping[str, float | str],
                 differences: np.ndarray | None, confidence: float) -> dict:
    """{metric: {value, ci_low, ci_high, p_value[, reason][, ci_reason]}} for PAIRED_METRICS.

    `differences` is (B, len(PAIRED_METRICS)): the column's resampled metrics minus the
    reference's on the same resamples, or None without a bootstrap.
    """
    if differences is not None:
        intervals = percentile_intervals(differences, confidence)
        p_values = bootstrap_p_values(differences)
    cells = {}
    for index, name in enumerate(PAIRED_METRICS):
        mine, theirs = point[name], reference[name]
        if isinstance(mine, str) or isinstance(theirs, str):
            cells[name] = {"value": None, "ci_low": None, "ci_high": None, "p_value": None,
                           "reason": mine if isinstance(mine, str) else f"reference: {theirs}"}
            continue
        cell = {"value": mine - theirs, "ci_low": None, "ci_high": None, "p_value": None}
        if differences is not None:
            cell["ci_low"], cell["ci_high"] = _finite(intervals.low[index]), _finite(intervals.high[index])
            if cell["ci_low"] is None:
                cell["ci_reason"] = _too_few(int(intervals.n_valid[index]), intervals.n_resamples)
            else:
                cell["p_value"] = _finite(p_values[index])
        cells[name] = cell
    return cells


def evaluate_split(is_false: np.ndarray, scores: Mapping[str, np.ndarray], units: np.ndarray,
                   settings: EvalSettings, split_seed: Sequence[int]) -> dict:
    """One split's entry of metrics.json (see the module docstring).

    `units` (n,) is the resampled cluster of each question (its image, or one per question);
    `settings.cluster_unit` only names it in the report. `split_seed` seeds the draws.
    """
    names = m.metric_names(settings.coverages)
    points = {key: point_metrics(is_false, values, settings.coverages) for key, values in scores.items()}
    n, n_errors = len(is_false), int(is_false.sum())
    cluster_of, n_units = cluster_indices(units)
    result: dict = {"n": n, "n_errors": n_errors, "accuracy": 1 - n_errors / n, "error_rate": n_errors / n,
                    "accuracy_ci_low": None, "accuracy_ci_high": None,
                    "bootstrap_unit": settings.cluster_unit, "n_units": n_units}

    draws: dict[str, np.ndarray] = {}  # column -> (B, metrics)
    if settings.n_resamples > 0:
        resamples = draw_clusters(cluster_of, n_units, settings.n_resamples, split_seed)
        # Accuracy of a resample: its wrong weight over its total weight, from per-cluster sums.
        sizes = np.bincount(cluster_of, minlength=n_units)
        errors = np.bincount(cluster_of, weights=is_false, minlength=n_units)
        accuracy = percentile_intervals((1.0 - (resamples.counts @ errors) / (resamples.counts @ sizes))[:, None],
                                        settings.confidence)
        result["accuracy_ci_low"], result["accuracy_ci_high"] = _finite(accuracy.low[0]), _finite(accuracy.high[0])
        for key, values in scores.items():
            resampled = resampled_metrics(is_false, values, resamples.weights, settings.n_resamples,
                                          settings.coverages)
            draws[key] = np.column_stack([resampled[name] for name in names])

    for key, point in points.items():
        if draws:
            interval = percentile_intervals(draws[key], settings.confidence)
            result[key] = metric_cells(point, interval.low, interval.high, interval.n_valid, settings.n_resamples)
        else:
            result[key] = metric_cells(point, None, None, None, settings.n_resamples)

    reference = settings.reference if settings.reference in scores else None
    result["paired_reference"] = reference
    result["paired"] = {}
    if reference is not None:
        paired_columns = [names.index(name) for name in PAIRED_METRICS]
        for key in scores:
            if key == reference:
                continue
            differences = (draws[key][:, paired_columns] - draws[reference][:, paired_columns]) if draws else None
            result["paired"][key] = paired_cells(points[key], points[reference], differences, settings.confidence)
    return result


def evaluate(joined: JoinedScores, settings: EvalSettings) -> dict:
    """metrics.json: {split: evaluate_split(...)} for every split of `splits.split_masks`."""
    units = cluster_units(joined, settings.cluster_unit)
    report = {}
    for split_index, (split, mask) in enumerate(split_masks(joined.categories, joined.predictions).items()):
        scores = {column.key: column.values[mask] for column in joined.columns}
        report[split] = evaluate_split(joined.is_false[mask], scores, units[mask], settings,
                                       (settings.seed, split_index))
    return report
