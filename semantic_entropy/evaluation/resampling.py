"""Bootstrap resamples of clustered questions, kept as how often each cluster is drawn.

POPE asks 18 questions of every image (6 per split), so questions about one image are not
independent draws: the image is the unit that was sampled. A cluster resample draws as many
clusters as there are, with replacement, and keeps every question of each drawn cluster.
With one question per cluster it is the ordinary bootstrap of questions.

A resample is stored as counts: `counts[b, k]` = how often cluster k is drawn in resample b.
A question then weighs its cluster's count, and a metric of the weighted questions equals
the metric of the resampled questions with their repeats (`weighted_metrics`), so no
resampled copy of the data is ever built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClusterResamples:
    counts: np.ndarray  # (B, K) int32: draws of each cluster in each resample; each row sums to K
    cluster_of: np.ndarray  # (n,) cluster index of each question

    @property
    def n_resamples(self) -> int:
        return self.counts.shape[0]

    @property
    def n_clusters(self) -> int:
        return self.counts.shape[1]

    def weights(self, order: np.ndarray | None = None, rows: slice = slice(None)) -> np.ndarray:
        """(rows, n) weight of each question (in `order`, default input order): its cluster's count.

        >>> resamples = ClusterResamples(np.array([[2, 0], [1, 1]], dtype=np.int32), np.array([0, 0, 1]))
        >>> resamples.weights().tolist(), resamples.weights(order=np.array([2, 0]), rows=slice(1, 2)).tolist()
        ([[2, 2, 0], [1, 1, 1]], [[1, 1]])
        """
        columns = self.cluster_of if order is None else self.cluster_of[order]
        return np.take(self.counts[rows], columns, axis=1)


def cluster_indices(units: Sequence) -> tuple[np.ndarray, int]:
    """(n,) cluster index of each question's unit (e.g. its image), and the number of clusters.

    >>> indices, k = cluster_indices(["b.png", "a.png", "b.png"])
    >>> indices.tolist(), k
    ([1, 0, 1], 2)
    """
    distinct, inverse = np.unique(np.asarray(units), return_inverse=True)
    return inverse.reshape(-1), len(distinct)


def draw_clusters(cluster_of: np.ndarray, n_clusters: int, n_resamples: int,
                  seed: int | Sequence[int]) -> ClusterResamples:
    """`n_resamples` cluster bootstrap draws from `np.random.default_rng(seed)`.

    Each resample draws `n_clusters` cluster indices uniformly with replacement. With one
    question per cluster (`cluster_of` = 0..n-1) the draws are exactly those of resampling
    n questions, resample after resample, from the same generator.

    Worked example: 3 questions, the first two about image 0. Every resample draws 2 images;
    the first draws image 1 twice and keeps question 3 twice, the third keeps questions 1 and
    2 twice each: the two questions of an image always move together.

    >>> resamples = draw_clusters(np.array([0, 0, 1]), 2, n_resamples=4, seed=0)
    >>> resamples.counts.tolist()
    [[0, 2], [1, 1], [2, 0], [2, 0]]
    >>> resamples.weights().tolist()
    [[0, 0, 2], [1, 1, 1], [2, 2, 0], [2, 2, 0]]
    """
    if n_clusters < 1:
        raise ValueError(f"bootstrap needs at least one cluster, got {n_clusters}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n_clusters, size=(n_resamples, n_clusters))  # (B, K)
    # One bincount for all rows: row b's draws are shifted into their own block of K bins.
    shifted = drawn + (np.arange(n_resamples) * n_clusters)[:, None]
    counts = np.bincount(shifted.ravel(), minlength=n_resamples * n_clusters).reshape(n_resamples, n_clusters)
    return ClusterResamples(counts.astype(np.int32), np.asarray(cluster_of))
