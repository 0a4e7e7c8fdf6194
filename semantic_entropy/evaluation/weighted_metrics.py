"""The metrics of `metrics` for many weightings of one split's questions at once.

A bootstrap resample is a weighting: question i counts w[b, i] times in resample b (see
`resampling`). One score column's questions are ranked once (`rank_scores`); a row of weights
then only changes how much weight each tie group holds, and every metric of every row follows
from one cumulative sum over the ranked weights and a few passes over the groups that hold a
wrong answer (usually a small share), with no loop over the resamples. With every weight 1 the
values are those of `metrics` (the tests check it on random data with ties).

Notation, per row, tie groups g in ascending uncertainty: c_g and e_g the weight of right and
of wrong answers in g, n_g = c_g + e_g, a_g the weight of the groups before g, C_g and E_g the
right and wrong weight before g; totals N, C, E; H(m) = 1 + 1/2 + ... + 1/m and
S(m) = H(0) + H(1) + ... + H(m - 1). Every sum runs over the groups with a wrong answer only.

- AUROC = sum_g e_g (C_g + c_g / 2) / (E C): pairs (wrong, right) won, ties half (Mann-Whitney).
- AUPR = sum_g e_g/E * (E - E_g)/(N - a_g): precision when flagging g and everything above it.
- AURAC = mean over k = 1..N of R(k)/k, R(k) the right answers among the k most certain.
  Writing R(k) = k - W(k), a wrong answer at rank p lowers the sum by H(N) - H(p - 1); a tie
  spreads its e_g wrong answers evenly over ranks a_g + 1..a_g + n_g (ties averaged), so
  AURAC = 1 - (E H(N) - sum_g e_g (S(a_g + n_g) - S(a_g)) / n_g) / N.
- Oracle AURAC = (C + C (H(N) - H(C))) / N; PRR = (AURAC - C/N) / (oracle - C/N).
- Accuracy at a coverage: 1 - W(K)/K with K = `metrics.kept_for_coverage(N, coverage)` and
  W(K) = E_g + (K - a_g) e_g / n_g in the group g that holds rank K.

Weights are whole numbers (draw counts), so every a_g indexes the tables of H and S directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from semantic_entropy.evaluation.metrics import DEFAULT_COVERAGES, coverage_metric_name, validate_inputs


@dataclass(frozen=True)
class RankedScores:
    """One score column's questions ranked once: ascending uncertainty, right before wrong in a tie."""

    order: np.ndarray  # (n,) question indices in rank order
    starts: np.ndarray  # (G + 1,) rank position where each tie group starts, then n
    first_error: np.ndarray  # (G,) rank position of each group's first wrong answer (its end if none)
    group_of: np.ndarray  # (n,) tie group of each rank position
    error_groups: np.ndarray  # (Ge,) the groups that hold a wrong answer
    error_groups_before: np.ndarray  # (G + 1,) how many of those come before each group, then Ge


def rank_scores(is_false, uncertainty) -> RankedScores:
    """Rank the questions and find the tie groups and, inside each, where the wrong answers start.

    >>> ranked = rank_scores([1, 0, 0, 1], [0.9, 0.1, 0.9, 0.3])
    >>> ranked.order.tolist(), ranked.starts.tolist(), ranked.first_error.tolist()
    ([1, 3, 2, 0], [0, 1, 2, 4], [1, 1, 3])
    >>> ranked.error_groups.tolist(), ranked.error_groups_before.tolist()
    ([1, 2], [0, 0, 1, 2])
    """
    labels, scores = validate_inputs(is_false, uncertainty)
    order = np.lexsort((labels, scores))  # by score, then right (0) before wrong (1)
    ranked_scores = scores[order]
    new_group = np.concatenate(([True], ranked_scores[1:] != ranked_scores[:-1]))
    starts = np.flatnonzero(new_group)
    group_of = np.cumsum(new_group) - 1
    rights = np.bincount(group_of, weights=1.0 - labels[order], minlength=len(starts)).astype(np.int64)
    sizes = np.diff(np.append(starts, len(order)))
    has_error = rights < sizes
    return RankedScores(order=order, starts=np.append(starts, len(order)), first_error=starts + rights,
                        group_of=group_of, error_groups=np.flatnonzero(has_error),
                        error_groups_before=np.concatenate(([0], np.cumsum(has_error))))


def harmonic_tables(largest: int) -> tuple[np.ndarray, np.ndarray]:
    """(H(0..largest), S(0..largest)): harmonic numbers and their running sums S(m) = H(0) + ... + H(m - 1).

    >>> h, s = harmonic_tables(3)
    >>> h.tolist() == [0.0, 1.0, 1.5, 1.5 + 1 / 3], s.tolist() == [0.0, 0.0, 1.0, 2.5]
    (True, True)
    """
    h = np.concatenate(([0.0], np.cumsum(1.0 / np.arange(1, largest + 1))))
    return h, np.concatenate(([0.0], np.cumsum(h[:-1])))


def _row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b)


def kept_for_coverage_rows(total: np.ndarray, coverage: float) -> np.ndarray:
    """`metrics.kept_for_coverage` for many totals at once.

    >>> kept_for_coverage_rows(np.array([40.0, 10.0, 3.0]), 0.95).tolist()
    [38.0, 10.0, 3.0]
    """
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    return np.maximum(1.0, np.ceil(total * coverage - 1e-9))


def weighted_metrics(ranked: RankedScores, weights: np.ndarray,
                     coverages: Sequence[float] = DEFAULT_COVERAGES) -> dict[str, np.ndarray]:
    """{metric: (B,) value per row of `weights`} in `metrics.metric_names` order; NaN where a row
    has no wrong (or no right) answer and the metric needs both.

    `weights` is (B, n) whole numbers with its columns in `ranked.order`.

    Worked example: the questions of `metrics`' docstrings (right 0.1, 0.4; wrong 0.35, 0.8)
    weighted once, then with the right answer 0.4 drawn twice and the error 0.35 not at all.
    The second row ranks right, right, right, wrong: its error is above every right answer
    (AUROC 1) and keeping 1..4 gives accuracies 1, 1, 1, 3/4 (AURAC 0.9375, the oracle's).

    >>> ranked = rank_scores([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> rows = np.array([[1, 1, 1, 1], [1, 0, 2, 1]])  # columns in ranked.order: 0.1, 0.35, 0.4, 0.8
    >>> values = weighted_metrics(ranked, rows)
    >>> [round(float(v), 6) for v in values["auroc"]], [round(float(v), 6) for v in values["aupr"]]
    ([0.75, 1.0], [0.833333, 1.0])
    >>> [round(float(v), 6) for v in values["aurac"]], [round(float(v), 6) for v in values["prr"]]
    ([0.666667, 0.9375], [0.571429, 1.0])
    >>> values["acc_at_80"].tolist()  # 80% of 4 keeps all 4
    [0.5, 0.75]
    """
    weights = np.asarray(weights)
    rows, n = weights.shape
    # Row r's running sums start at r * bound, above every earlier row's, so one searchsorted
    # over the flattened array finds the rank of any kept count in every row at once.
    bound = n * (int(weights.max(initial=0)) + 1) + 1
    shift = np.arange(rows, dtype=np.int64) * bound
    cumulative = np.empty((rows, n + 1), dtype=np.int64)
    cumulative[:, 0] = shift
    cumulative[:, 1:] = weights
    np.cumsum(cumulative, axis=1, out=cumulative)

    total_int = cumulative[:, -1] - shift
    total = total_int.astype(np.float64)  # (B,) N
    groups = ranked.error_groups
    start = cumulative[:, ranked.starts[groups]]  # (B, Ge), shifted
    end = cumulative[:, ranked.starts[groups + 1]]
    e = (end - cumulative[:, ranked.first_error[groups]]).astype(np.float64)  # e_g
    size = (end - start).astype(np.float64)  # n_g
    a = (start - shift[:, None]).astype(np.float64)  # a_g
    wrong_running = np.cumsum(e, axis=1)
    wrong = wrong_running[:, -1] if groups.size else np.zeros(rows)  # (B,) E
    wrong_before = wrong_running - e  # E_g
    right = total - wrong  # (B,) C
    defined = (wrong > 0) & (right > 0)
    safe_wrong = np.where(wrong > 0, wrong, 1.0)
    results: dict[str, np.ndarray] = {}

    right_before = a - wrong_before  # C_g
    pairs_won = _row_dot(e, right_before) + 0.5 * _row_dot(e, size - e)
    results["auroc"] = np.where(defined, pairs_won / (safe_wrong * np.where(right > 0, right, 1.0)), np.nan)

    precision = (wrong[:, None] - wrong_before) / np.maximum(total[:, None] - a, 1.0)
    results["aupr"] = np.where(defined, _row_dot(e, precision) / safe_wrong, np.nan)

    h, s = harmonic_tables(int(total_int.max()))
    mean_s = (s[end - shift[:, None]] - s[start - shift[:, None]]) / np.maximum(size, 1.0)
    aurac = 1.0 - (wrong * h[total_int] - _row_dot(e, mean_s)) / total
    results["aurac"] = aurac

    right_int = total_int - np.rint(wrong).astype(np.int64)
    oracle = (right + right * (h[total_int] - h[right_int])) / total
    chance = right / total
    results["prr"] = np.where(defined, (aurac - chance) / np.where(defined, oracle - chance, 1.0), np.nan)

    flat = cumulative.ravel()
    wrong_edges = np.concatenate((np.zeros((rows, 1)), wrong_running), axis=1)  # (B, Ge + 1)
    row = np.arange(rows)
    for coverage in coverages:
        kept = kept_for_coverage_rows(total, coverage)
        # First running sum >= kept: rank position p, so the kept-th answer is ranked p - 1.
        position = np.searchsorted(flat, kept.astype(np.int64) + shift) - row * (n + 1)
        group = ranked.group_of[position - 1]
        g_start = flat[row * (n + 1) + ranked.starts[group]]
        g_size = (flat[row * (n + 1) + ranked.starts[group + 1]] - g_start).astype(np.float64)
        wrong_before_g = wrong_edges[row, ranked.error_groups_before[group]]
        e_g = wrong_edges[row, ranked.error_groups_before[group + 1]] - wrong_before_g  # 0 without errors
        kept_wrong = wrong_before_g + (kept - (g_start - shift)) * e_g / np.maximum(g_size, 1.0)
        results[coverage_metric_name(coverage)] = 1.0 - kept_wrong / kept
    return results


def resampled_metrics(is_false, uncertainty, weights_of: Callable[[np.ndarray, slice], np.ndarray], n_rows: int,
                      coverages: Sequence[float] = DEFAULT_COVERAGES, chunk_rows: int | None = None) -> dict[str, np.ndarray]:
    """{metric: (n_rows,)} for the weightings `weights_of(order, rows)` -> (rows, n), taken in chunks.

    `weights_of` gives the rows' weights with the questions in `order` (e.g.
    `ClusterResamples.weights`). Chunks of rows keep the working arrays small enough to stay
    in the processor's cache, which is most of the speed.

    >>> rows = np.array([[1, 1, 1, 1], [0, 2, 2, 0]])
    >>> values = resampled_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8],
    ...                            lambda order, part: rows[part][:, order], n_rows=2, chunk_rows=1)
    >>> values["auroc"].tolist()  # the second row: 0.4 (right) twice against 0.35 (wrong) twice
    [0.75, 0.0]
    """
    ranked = rank_scores(is_false, uncertainty)
    n = len(ranked.order)
    if chunk_rows is None:
        chunk_rows = max(1, (1 << 18) // max(n, 1))
    results: dict[str, np.ndarray] = {}
    for first in range(0, n_rows, chunk_rows):
        part = slice(first, min(n_rows, first + chunk_rows))
        values = weighted_metrics(ranked, weights_of(ranked.order, part), coverages)
        for name, column in values.items():
            results.setdefault(name, np.empty(n_rows))[part] = column
    return results
