"""How well an uncertainty score ranks wrong answers above right ones: pure metric math.

Every function takes `is_false` (1 where the greedy answer is wrong) and `uncertainty` (higher
= more uncertain), one entry per question, and returns plain numbers. Conventions:

- AUROC and AUPR treat errors as the positive class (`y_true = is_false`, `y_score =
  uncertainty`) and equal scikit-learn's `roc_auc_score` and `average_precision_score`
  (the tests check this on random data with ties).
- Rejection metrics (AURAC, PRR, accuracy at a coverage) keep the most certain questions.
  **Ties in uncertainty are averaged**: questions with the same score are kept or rejected as
  one group, and keeping only part of a group counts the group's mean accuracy for each of its
  kept members (the expectation over every order of the tie). Results therefore never depend
  on the order of the input, and a constant score is exactly as good as random rejection.
- Undefined values raise `UndefinedMetricError` whose message says why (e.g. every answer
  right): AUROC, AUPR and PRR need both right and wrong answers.

The core representation is `TieGroups`: questions grouped by equal uncertainty, each group
holding how many questions and how many errors it has. These functions are the reference; the
bootstrap computes the same metrics for a thousand resamples at once in `weighted_metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_COVERAGES = (0.8, 0.9, 0.95)


class UndefinedMetricError(ValueError):
    """A metric that has no value on these answers; the message is the reason."""


# ---- tie groups ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TieGroups:
    """Questions grouped by equal uncertainty, groups in ascending uncertainty."""

    uncertainty: np.ndarray  # (G,) the distinct scores, ascending
    errors: np.ndarray  # (G,) wrong answers in each group, as floats
    counts: np.ndarray  # (G,) questions in each group, as floats

    @property
    def n(self) -> float:
        return float(self.counts.sum())

    @property
    def n_errors(self) -> float:
        return float(self.errors.sum())


def validate_inputs(is_false, uncertainty) -> tuple[np.ndarray, np.ndarray]:
    """(is_false as 0/1 floats, uncertainty as floats), both 1-D, equal length, non-empty, finite."""
    labels = np.asarray(is_false)
    scores = np.asarray(uncertainty, dtype=float)
    if labels.ndim != 1 or scores.ndim != 1:
        raise ValueError(f"is_false and uncertainty must be 1-D, got shapes {labels.shape} and {scores.shape}")
    if len(labels) != len(scores):
        raise ValueError(f"is_false has {len(labels)} entries but uncertainty has {len(scores)}")
    if len(labels) == 0:
        raise ValueError("no questions: is_false and uncertainty are empty")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"is_false must hold only 0/1 (or booleans), got values {sorted(set(labels.tolist()))[:5]}")
    if not np.isfinite(scores).all():
        bad = np.flatnonzero(~np.isfinite(scores))[:5].tolist()
        raise ValueError(f"uncertainty must be finite; not at positions {bad}")
    return labels.astype(float), scores


def tie_groups(is_false, uncertainty) -> TieGroups:
    """Group questions by equal uncertainty (ascending) and count each group's questions and errors.

    >>> groups = tie_groups([1, 0, 0, 1], [0.9, 0.1, 0.9, 0.3])
    >>> groups.uncertainty.tolist(), groups.counts.tolist(), groups.errors.tolist()
    ([0.1, 0.3, 0.9], [1.0, 1.0, 2.0], [0.0, 1.0, 1.0])
    """
    labels, scores = validate_inputs(is_false, uncertainty)
    distinct, member_group = np.unique(scores, return_inverse=True)
    size = len(distinct)
    return TieGroups(
        uncertainty=distinct,
        errors=np.bincount(member_group, weights=labels, minlength=size),
        counts=np.bincount(member_group, minlength=size).astype(float),
    )


def _require_both_classes(groups: TieGroups, metric: str) -> None:
    n, n_errors = groups.n, groups.n_errors
    if n_errors == 0:
        raise UndefinedMetricError(f"every answer is correct ({n:g} of {n:g}): {metric} needs wrong answers too")
    if n_errors == n:
        raise UndefinedMetricError(f"every answer is wrong ({n:g} of {n:g}): {metric} needs right answers too")


# ---- ranking metrics -----------------------------------------------------------------------


def auroc_of_groups(groups: TieGroups) -> float:
    """AUROC = P(an error scores above a right answer) + P(tie) / 2 (Mann-Whitney U)."""
    _require_both_classes(groups, "AUROC")
    correct = groups.counts - groups.errors
    correct_below = np.cumsum(correct) - correct
    pairs_won = np.sum(groups.errors * (correct_below + 0.5 * correct))
    return float(pairs_won / (groups.n_errors * float(correct.sum())))


def auroc(is_false, uncertainty) -> float:
    """Area under the ROC curve with errors as positives; ties count one half.

    Worked example: errors score 0.35 and 0.8, right answers 0.1 and 0.4. Of the 4
    (error, right) pairs the error scores higher in 3 (0.35>0.1, 0.8>0.1, 0.8>0.4): 3/4.

    >>> auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> auroc([0, 1], [0.5, 0.5])  # a tie is half a win
    0.5
    """
    return auroc_of_groups(tie_groups(is_false, uncertainty))


def aupr_of_groups(groups: TieGroups) -> float:
    """Average precision of the errors: sum over thresholds of (recall step) x precision."""
    _require_both_classes(groups, "AUPR")
    errors_desc = groups.errors[::-1]  # most uncertain first
    flagged = np.cumsum(groups.counts[::-1])
    caught = np.cumsum(errors_desc)
    steps = errors_desc > 0
    return float(np.sum(errors_desc[steps] / groups.n_errors * caught[steps] / flagged[steps]))


def aupr(is_false, uncertainty) -> float:
    """Area under the precision-recall curve of the errors (average precision, as scikit-learn).

    Worked example: flag from the most uncertain down. 0.8 is an error: recall 1/2, precision
    1/1. 0.4 is right. 0.35 is an error: recall 2/2, precision 2/3. AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    A tie group is one threshold: all its members are flagged together.

    >>> round(aupr([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 6)
    0.833333
    """
    return aupr_of_groups(tie_groups(is_false, uncertainty))


def roc_curve(is_false, uncertainty) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) at every threshold, from (0, 0) to (1, 1).

    Positives are the errors; a tie group moves both rates at once (a diagonal step).

    >>> fpr, tpr = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> fpr.tolist(), tpr.tolist()
    ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    """
    groups = tie_groups(is_false, uncertainty)
    _require_both_classes(groups, "the ROC curve")
    correct = groups.counts - groups.errors
    fpr = np.concatenate(([0.0], np.cumsum(correct[::-1]) / correct.sum()))
    tpr = np.concatenate(([0.0], np.cumsum(groups.errors[::-1]) / groups.n_errors))
    return fpr, tpr


# ---- rejection metrics ---------------------------------------------------------------------


def expected_correct_kept(groups: TieGroups, kept: np.ndarray) -> np.ndarray:
    """Expected number of right answers among the `kept` most certain questions, ties averaged.

    Linear interpolation of the cumulative right answers between group boundaries is exactly
    the average over every order of the tied questions.

    >>> groups = tie_groups([0, 1, 0, 1], [0.1, 0.5, 0.5, 0.9])
    >>> expected_correct_kept(groups, np.array([1, 2, 3, 4])).tolist()
    [1.0, 1.5, 2.0, 2.0]
    """
    present = groups.counts > 0
    boundaries = np.concatenate(([0.0], np.cumsum(groups.counts[present])))
    correct = np.concatenate(([0.0], np.cumsum(groups.counts[present] - groups.errors[present])))
    return np.interp(kept, boundaries, correct)


def _kept_sizes(groups: TieGroups) -> np.ndarray:
    return np.arange(1, int(round(groups.n)) + 1, dtype=float)


def rejection_curve_of_groups(groups: TieGroups) -> tuple[np.ndarray, np.ndarray]:
    kept = _kept_sizes(groups)
    return kept / groups.n, expected_correct_kept(groups, kept) / kept


def rejection_curve(is_false, uncertainty) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy-rejection curve: (coverage, accuracy of the kept) for keeping 1..n most certain.

    Coverage k/n for k = 1..n; rejection rate = 1 - coverage.

    >>> coverage, accuracy = rejection_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> coverage.tolist(), accuracy.round(4).tolist()
    ([0.25, 0.5, 0.75, 1.0], [1.0, 0.5, 0.6667, 0.5])
    """
    return rejection_curve_of_groups(tie_groups(is_false, uncertainty))


def aurac_of_groups(groups: TieGroups) -> float:
    _, accuracy = rejection_curve_of_groups(groups)
    return float(accuracy.mean())


def aurac(is_false, uncertainty) -> float:
    """Area under the accuracy-rejection curve: the mean accuracy of the k most certain, k = 1..n.

    (A Riemann sum over coverages 1/n, 2/n, ..., 1.) Random rejection gives the accuracy;
    1.0 needs every kept answer right at every coverage.

    Worked example: ascending uncertainty the answers are right (0.1), wrong (0.35), right
    (0.4), wrong (0.8); keeping 1, 2, 3, 4 gives accuracies 1, 1/2, 2/3, 1/2: mean 2/3.

    >>> round(aurac([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 6)
    0.666667
    >>> aurac([0, 1], [0.5, 0.5])  # a tie is averaged: the accuracy at every coverage
    0.5
    """
    return aurac_of_groups(tie_groups(is_false, uncertainty))


def oracle_aurac(n: float, n_errors: float) -> float:
    """AURAC of the oracle, which rejects every error first: mean over k of min(k, right) / k.

    >>> round(oracle_aurac(4, 2), 6)  # (1 + 1 + 2/3 + 1/2) / 4
    0.791667
    """
    kept = np.arange(1, int(round(n)) + 1, dtype=float)
    return float(np.mean(np.minimum(kept, n - n_errors) / kept))


def prr_of_groups(groups: TieGroups) -> float:
    _require_both_classes(groups, "PRR")
    random_area = 1.0 - groups.n_errors / groups.n
    oracle_area = oracle_aurac(groups.n, groups.n_errors)
    return (aurac_of_groups(groups) - random_area) / (oracle_area - random_area)


def prr(is_false, uncertainty) -> float:
    """Prediction-rejection ratio: (AURAC - random) / (oracle - random); 1 = oracle, 0 = random.

    Random rejection keeps the accuracy at every coverage (AURAC = accuracy); the oracle
    rejects the errors first. Negative when the score prefers to keep errors.

    Worked example: AURAC 2/3 (see `aurac`), random 1/2, oracle 19/24 (see `oracle_aurac`):
    (2/3 - 1/2) / (19/24 - 1/2) = (4/24) / (7/24) = 4/7.

    >>> round(prr([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 6)
    0.571429
    >>> prr([0, 1, 0, 1], [1.0, 1.0, 1.0, 1.0])  # a constant score is random rejection
    0.0
    """
    return prr_of_groups(tie_groups(is_false, uncertainty))


def kept_for_coverage(n: int, coverage: float) -> int:
    """How many questions a coverage keeps: the fewest that reach it, at least one.

    >>> kept_for_coverage(40, 0.95), kept_for_coverage(10, 0.7), kept_for_coverage(3, 0.1)
    (38, 7, 1)
    """
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    return max(1, math.ceil(n * coverage - 1e-9))


def accuracy_at_coverage_of_groups(groups: TieGroups, coverage: float) -> float:
    kept = kept_for_coverage(int(round(groups.n)), coverage)
    return float(expected_correct_kept(groups, np.array([kept], dtype=float))[0] / kept)


def accuracy_at_coverage(is_false, uncertainty, coverage: float) -> float:
    """Accuracy of the most certain `coverage` fraction of the questions (ties averaged).

    Worked example: 80% of 5 keeps the 4 most certain: right, right, wrong, then a tie at 0.9
    of one right and one wrong answer of which one is kept: (2 + 0 + 1/2) / 4 = 0.625.

    >>> accuracy_at_coverage([0, 0, 1, 0, 1], [0.1, 0.2, 0.3, 0.9, 0.9], 0.8)
    0.625
    """
    return accuracy_at_coverage_of_groups(tie_groups(is_false, uncertainty), coverage)


# ---- all metrics at once -------------------------------------------------------------------


def coverage_metric_name(coverage: float) -> str:
    """The key of accuracy at `coverage` in the reports.

    >>> coverage_metric_name(0.9), coverage_metric_name(0.875)
    ('acc_at_90', 'acc_at_87.5')
    """
    return f"acc_at_{100 * coverage:g}"


def metric_names(coverages: Sequence[float] = DEFAULT_COVERAGES) -> tuple[str, ...]:
    return ("auroc", "aupr", "aurac", "prr", *(coverage_metric_name(c) for c in coverages))


def metrics_of_groups(groups: TieGroups, coverages: Sequence[float] = DEFAULT_COVERAGES) -> dict[str, float | str]:
    """Every metric of `metric_names(coverages)`: a float, or the reason (a str) it is undefined."""
    computations: dict[str, Callable[[], float]] = {
        "auroc": lambda: auroc_of_groups(groups),
        "aupr": lambda: aupr_of_groups(groups),
        "aurac": lambda: aurac_of_groups(groups),
        "prr": lambda: prr_of_groups(groups),
    }
    for coverage in coverages:
        computations[coverage_metric_name(coverage)] = lambda c=coverage: accuracy_at_coverage_of_groups(groups, c)
    results: dict[str, float | str] = {}
    for name, compute in computations.items():
        try:
            results[name] = compute()
        except UndefinedMetricError as reason:
            results[name] = str(reason)
    return results
