"""The verdict cache of the pairwise judges: one model call per distinct (judge, input).

Free-form runs ask the same pair again and again: POPE asks one question of many images and
short answers recur, a rerun of stage 2 with another measure list sees the same answers, and
one process may score several generations files with one judge. A verdict depends only on
what the model sees and on the model itself, so the key is exactly that: the judge's identity
(its model and every setting that changes the verdict, `PairwiseJudge.identity`) and the
exact model input (the pair's text as the model receives it). Two judges may share one
cache; their identities keep their verdicts apart.

Least-recently-used entries are dropped beyond `max_entries`, which bounds memory (a cached
verdict is three floats plus its key text).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

import numpy as np


class JudgeCache:
    """LRU map (judge identity, model input) -> (3,) label probabilities.

    >>> cache = JudgeCache(max_entries=2)
    >>> cache.put("j", "a", np.array([0.1, 0.2, 0.7])); cache.put("j", "b", np.zeros(3))
    >>> cache.get("j", "a").tolist(), cache.get("other judge", "a")
    ([0.1, 0.2, 0.7], None)
    >>> cache.put("j", "c", np.ones(3))  # "b" is the least recently used: dropped
    >>> cache.get("j", "b") is None, len(cache)
    (True, 2)
    """

    def __init__(self, max_entries: int = 200_000):
        if max_entries < 1:
            raise ValueError(f"the judge cache needs room for at least one verdict, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: tuple[Hashable, Hashable]) -> bool:
        return key in self._entries

    def get(self, identity: Hashable, model_input: Hashable) -> np.ndarray | None:
        key = (identity, model_input)
        probs = self._entries.get(key)
        if probs is not None:
            self._entries.move_to_end(key)
        return probs

    def put(self, identity: Hashable, model_input: Hashable, probs: np.ndarray) -> None:
        key = (identity, model_input)
        self._entries[key] = np.asarray(probs, dtype=np.float64)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
