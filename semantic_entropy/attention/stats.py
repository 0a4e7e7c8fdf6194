"""Aggregating captured answer attention into maps and per-question statistics (pure numpy).

Inputs are the arrays of `attention_capture.AnswerAttention`:
  image   (n, L, H, N): attention of the query that produced answer token t to image position p,
  regions (n, L, H, R): attention mass per prompt region (`attention_capture.REGIONS`).

An aggregation is named by its settings (`Aggregation.name`), and that name goes into every
figure and table column it produced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from semantic_entropy.attention.geometry import (
    boxes_area_fraction,
    hottest_patch,
    padding_patches,
    patch_box_in_original,
    pointing_hit,
)

HEAD_REDUCTIONS = ("mean", "max")


def parse_layer_range(text: str | None, num_layers: int) -> range:
    """Layers selected by 'a:b' (Python slice, b exclusive, negatives from the end), 'a' or None (all).

    >>> parse_layer_range(None, 32)
    range(0, 32)
    >>> parse_layer_range("8:16", 32), parse_layer_range("-4:", 32), parse_layer_range("5", 32)
    (range(8, 16), range(28, 32), range(5, 6))
    """
    if text is None or text.strip() in ("", ":"):
        return range(num_layers)
    text = text.strip()
    if ":" not in text:
        index = int(text)
        index = index + num_layers if index < 0 else index
        if not 0 <= index < num_layers:
            raise ValueError(f"layer {text} is outside 0..{num_layers - 1}")
        return range(index, index + 1)
    start, stop = (int(part) if part.strip() else None for part in text.split(":", 1))
    selected = range(num_layers)[slice(start, stop)]
    if len(selected) == 0:
        raise ValueError(f"layer range {text!r} selects no layer of {num_layers}")
    return selected


@dataclass(frozen=True)
class Aggregation:
    """How per-layer, per-head maps become one map: heads reduced by mean or max, layers averaged."""

    layers: range
    head_reduce: str = "mean"

    def __post_init__(self):
        if self.head_reduce not in HEAD_REDUCTIONS:
            raise ValueError(f"head_reduce must be one of {HEAD_REDUCTIONS}, got {self.head_reduce!r}")

    @property
    def name(self) -> str:
        """The settings in words, for figures and tables.

        >>> Aggregation(range(0, 32), "mean").name
        'heads=mean, layers=0-31'
        """
        return f"heads={self.head_reduce}, layers={self.layers.start}-{self.layers.stop - 1}"


def answer_token_rows(token_ids, eos_token_id: int) -> list[int]:
    """Rows of the answer's content tokens: every token but a final EOS (the EOS alone if that is all).

    >>> answer_token_rows([3869, 2], 2), answer_token_rows([2], 2), answer_token_rows([5, 6], 2)
    ([0], [0], [0, 1])
    """
    rows = [t for t, token in enumerate(token_ids) if not (token == eos_token_id and t == len(token_ids) - 1)]
    return rows or list(range(len(token_ids)))


def image_map(image: np.ndarray, aggregation: Aggregation, token_rows) -> np.ndarray:
    """(N,) attention to each image position: heads reduced, then mean over layers and tokens.

    >>> a = np.zeros((1, 2, 2, 4)); a[0, 0, 0, 1] = 0.4; a[0, 1, 1, 2] = 0.8
    >>> image_map(a, Aggregation(range(2), "mean"), [0]).tolist()   # heads mean, layers mean
    [0.0, 0.1, 0.2, 0.0]
    >>> image_map(a, Aggregation(range(2), "max"), [0]).tolist()
    [0.0, 0.2, 0.4, 0.0]
    """
    selected = image[np.asarray(token_rows)][:, list(aggregation.layers)]  # (n', L', H, N)
    per_head = selected.mean(axis=2) if aggregation.head_reduce == "mean" else selected.max(axis=2)  # (n', L', N)
    return per_head.mean(axis=(0, 1))


def region_shares(regions: np.ndarray, token_rows) -> np.ndarray:
    """(L, R) share of attention per layer and region, mean over heads and the chosen tokens (rows sum to 1).

    >>> r = np.array([[[[0.5, 0.5], [1.0, 0.0]]]])   # 1 token, 1 layer, 2 heads, 2 regions
    >>> region_shares(r, [0]).tolist()
    [[0.75, 0.25]]
    """
    return regions[np.asarray(token_rows)].mean(axis=(0, 2))


def map_entropy(weights: np.ndarray) -> float:
    """Entropy (nats) of a non-negative map normalised to sum 1; 0 for an all-zero map.

    >>> round(map_entropy(np.ones(576)), 4) == round(math.log(576), 4), map_entropy(np.eye(3)[0])
    (True, 0.0)
    """
    weights = np.asarray(weights, dtype=np.float64).ravel()
    total = weights.sum()
    if total <= 0:
        return 0.0
    p = weights[weights > 0] / total
    return max(0.0, float(-(p * np.log(p)).sum()))


def to_grid(weights: np.ndarray) -> np.ndarray:
    """(N,) -> (g, g) in row-major patch order (CLIP's order of patch tokens).

    >>> to_grid(np.arange(4)).tolist()
    [[0, 1], [2, 3]]
    """
    side = math.isqrt(weights.shape[-1])
    if side * side != weights.shape[-1]:
        raise ValueError(f"{weights.shape[-1]} image positions do not form a square grid")
    return weights.reshape(*weights.shape[:-1], side, side)


def map_statistics(weights: np.ndarray, width: int, height: int) -> dict:
    """Entropy, hottest patch (and its box in original pixels), padding share of one (N,) map.

    >>> m = np.full(576, 1e-4); m[12 * 24 + 5] = 0.5
    >>> s = map_statistics(m, 300, 200)
    >>> s["hottest_row"], s["hottest_col"], s["hottest_box"]
    (12, 5, [62.5, 100.0, 75.0, 112.5])
    """
    grid = to_grid(weights)
    total = float(grid.sum())
    row, col = hottest_patch(grid)
    box = patch_box_in_original(row, col, width, height, grid.shape[0])
    padding = padding_patches(width, height, grid.shape[0])
    return {
        "map_entropy": map_entropy(grid),
        "map_entropy_normalized": map_entropy(grid) / math.log(grid.size),
        "hottest_row": row,
        "hottest_col": col,
        "hottest_box": None if box is None else [round(v, 2) for v in box],
        "hottest_share": float(grid[row, col]) / total if total > 0 else 0.0,
        "padding_share": float(grid[padding].sum()) / total if total > 0 else 0.0,
    }


def question_statistics(image: np.ndarray, regions: np.ndarray, region_names, token_rows,
                        aggregation: Aggregation, width: int, height: int) -> dict:
    """The table row of one question: per-layer region shares plus statistics of the aggregated map.

    `visual_ratio` is the image share of the attention, mean over heads and answer tokens, per
    layer; `*_share` are the region shares averaged over the aggregation's layers.
    """
    shares = region_shares(regions, token_rows)  # (L, R)
    layers = list(aggregation.layers)
    row = {
        "aggregation": aggregation.name,
        "visual_ratio": [round(float(v), 6) for v in shares[:, list(region_names).index("image")]],
    }
    for index, name in enumerate(region_names):
        row[f"{name}_share"] = float(shares[layers, index].mean())
    row.update(map_statistics(image_map(image, aggregation, token_rows), width, height))
    return row


def pointing_trial(weights: np.ndarray, width: int, height: int, boxes) -> dict:
    """One pointing-game trial: does the hottest patch of the (N,) map fall on the object's boxes?

    Hit = the centre of the hottest patch's original-pixel box lies in one of `boxes`; the
    chance level is the share of the image those boxes cover (a uniformly random point).

    >>> m = np.zeros(576); m[12 * 24 + 5] = 1.0
    >>> pointing_trial(m, 300, 200, [(60, 95, 80, 110)])
    {'hit': True, 'chance': 0.005}
    """
    grid = to_grid(weights)
    row, col = hottest_patch(grid)
    return {"hit": pointing_hit(row, col, width, height, boxes, grid.shape[0]),
            "chance": boxes_area_fraction(boxes, width, height)}


def pointing_game(trials) -> dict:
    """Score (share of hits) and chance level (mean box share) over trials.

    >>> pointing_game([{"hit": True, "chance": 0.1}, {"hit": False, "chance": 0.3}])
    {'score': 0.5, 'chance': 0.2, 'trials': 2}
    """
    trials = list(trials)
    if not trials:
        return {"score": None, "chance": None, "trials": 0}
    return {"score": sum(bool(t["hit"]) for t in trials) / len(trials),
            "chance": round(sum(t["chance"] for t in trials) / len(trials), 12), "trials": len(trials)}
