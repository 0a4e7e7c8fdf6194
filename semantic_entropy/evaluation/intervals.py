"""Percentile bootstrap intervals from resampled values, leaving out resamples where a value is undefined."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_VALID_FRACTION = 0.5  # fewer defined resamples than this share: no interval


@dataclass(frozen=True)
class Intervals:
    low: np.ndarray  # (k,) NaN where too few resamples were defined
    high: np.ndarray  # (k,)
    n_valid: np.ndarray  # (k,) resamples on which each statistic was defined
    n_resamples: int


def percentile_intervals(draws: np.ndarray, confidence: float = 0.95,
                         min_valid_fraction: float = MIN_VALID_FRACTION) -> Intervals:
    """Percentile interval of every column of `draws` (B resamples x k statistics), NaN = undefined.

    Undefined resamples (e.g. a draw without a wrong answer, where AUROC has no value) are
    left out; where fewer than `min_valid_fraction` of the B remain the interval is NaN.
    Percentiles interpolate linearly between order statistics (numpy's default).

    Worked example: the 2.5th and 97.5th percentiles of 0, 1, ..., 100 are 2.5 and 97.5; a
    column defined in 2 of 4 resamples has an interval, one defined in 1 of 4 has none.

    >>> values = percentile_intervals(np.arange(101.0)[:, None])
    >>> values.low.round(9).tolist(), values.high.round(9).tolist(), values.n_valid.tolist()
    ([2.5], [97.5], [101])
    >>> sparse = percentile_intervals(np.array([[1.0, 1.0], [3.0, np.nan], [np.nan, np.nan], [np.nan, np.nan]]), 0.5)
    >>> sparse.low.tolist(), sparse.high.tolist()
    ([1.5, nan], [2.5, nan])
    """
    draws = np.asarray(draws, dtype=np.float64)
    if draws.ndim != 2 or draws.shape[0] < 1:
        raise ValueError(f"draws must be (resamples, statistics) with at least one resample, got {draws.shape}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n_resamples, width = draws.shape
    n_valid = np.isfinite(draws).sum(axis=0)
    enough = n_valid >= max(1.0, min_valid_fraction * n_resamples)
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.full(width, np.nan), np.full(width, np.nan)
    if enough.any():
        chosen = draws[:, enough]
        complete = np.isfinite(chosen).all(axis=0)
        # nanpercentile is slow; most columns are complete and take the plain path.
        bounds = np.empty((2, chosen.shape[1]))
        if complete.any():
            bounds[:, complete] = np.percentile(chosen[:, complete], [tail, 100.0 - tail], axis=0)
        if (~complete).any():
            bounds[:, ~complete] = np.nanpercentile(chosen[:, ~complete], [tail, 100.0 - tail], axis=0)
        low[enough], high[enough] = bounds
    return Intervals(low=low, high=high, n_valid=n_valid, n_resamples=n_resamples)
