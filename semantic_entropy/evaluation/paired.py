"""Paired comparisons of two scores on the same questions: bootstrap p-values and Holm's adjustment.

Two scores evaluated on one bootstrap resample see the same questions, so the spread of their
difference over the resamples is the uncertainty of the difference itself. It is usually much
smaller than either score's own interval, because most of a score's sampling noise (which
images were drawn, how hard they are) is shared. Whether two marginal intervals overlap
therefore says little; the paired interval of the difference decides.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bootstrap_p_values(differences: np.ndarray) -> np.ndarray:
    """Two-sided bootstrap p-value of "the difference is 0", per column of `differences` (B x k).

    With D the defined (non-NaN) resampled differences of a column, below = #(d <= 0) and
    above = #(d >= 0) (a difference of exactly 0 counts on both sides):
    p = min(1, 2 min(below, above) / |D|).
    It is the smallest alpha at which the percentile interval of level 1 - alpha excludes 0, so
    the p-value and the interval agree. 0 means no resample fell on the other side of 0: report
    it as p < 1/|D|, the resolution of |D| resamples. NaN where no resample is defined.

    Worked example: differences 0.2, 0.1, 0.3, -0.05: below = 1, above = 3, p = 2 x 1 / 4 = 0.5.
    Nineteen positive differences: p = 0 (below 1/19). Identical scores: every difference is 0, p = 1.

    >>> bootstrap_p_values(np.array([[0.2], [0.1], [0.3], [-0.05]])).tolist()
    [0.5]
    >>> bootstrap_p_values(np.linspace(0.1, 1.9, 19)[:, None]).tolist()
    [0.0]
    >>> bootstrap_p_values(np.zeros((5, 1))).tolist()
    [1.0]
    """
    differences = np.asarray(differences, dtype=np.float64)
    if differences.ndim == 1:
        differences = differences[:, None]
    valid = np.isfinite(differences)
    n_valid = valid.sum(axis=0)
    below = (valid & (differences <= 0)).sum(axis=0)
    above = (valid & (differences >= 0)).sum(axis=0)
    p = 2.0 * np.minimum(below, above) / np.maximum(n_valid, 1)
    return np.where(n_valid > 0, np.minimum(1.0, p), np.nan)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment for a family of tests; None (no test) stays None.

    Sorted ascending, the i-th smallest of m p-values becomes max over j <= i of
    min(1, (m - j + 1) p_(j)). It keeps the chance of any false "significant" in the family
    at the nominal level without assuming the tests independent.

    Worked example: 0.01, 0.04, 0.03 with one missing: m = 3; sorted 0.01, 0.03, 0.04 give
    3 x 0.01 = 0.03, 2 x 0.03 = 0.06, 1 x 0.04 = 0.04 -> raised to 0.06 (monotone).

    >>> [None if p is None else round(p, 6) for p in holm([0.01, 0.04, None, 0.03])]
    [0.03, 0.06, None, 0.06]
    >>> [round(p, 6) for p in holm([0.02, 0.3])], holm([0.5, 0.9])  # capped at 1
    ([0.04, 0.3], [1.0, 1.0])
    """
    present = [(p, i) for i, p in enumerate(p_values) if p is not None and np.isfinite(p)]
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    m = len(present)
    for rank, (p, index) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[index] = running
    return adjusted
