"""PNG figures of stage 3: ROC curves, accuracy-rejection curves, score distributions.

Figures are drawn with matplotlib's object API (`matplotlib.figure.Figure`, which renders with
the Agg backend) so that nothing here touches pyplot's global state or needs a display.
Every function takes the data it draws and the file to write, and returns that path.

`SplitScores` is the input of the per-split figures: one split, its questions' correctness
and one score column per (run, measure). `write_plots` draws all three figures of a join.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from semantic_entropy.evaluation.joining import JoinedScores, ScoreColumn
from semantic_entropy.evaluation.metrics import UndefinedMetricError, auroc, oracle_aurac, rejection_curve, roc_curve
from semantic_entropy.evaluation.splits import ALL_SPLIT, split_masks

DPI = 120
PANEL_SIZE = (4.6, 4.0)  # inches per subplot


@dataclass(frozen=True)
class SplitScores:
    name: str  # "adversarial", ..., "all"
    is_false: np.ndarray  # (n,) 1 where the greedy answer is wrong
    scores: Mapping[str, np.ndarray]  # column key ("measure" or "run/measure") -> (n,) uncertainty


def grid_shape(panels: int) -> tuple[int, int]:
    """(rows, columns) of a near-square grid, at most 4 columns.

    >>> grid_shape(1), grid_shape(4), grid_shape(5), grid_shape(9)
    ((1, 1), (2, 2), (2, 3), (3, 3))
    """
    columns = min(4, math.ceil(math.sqrt(panels)))
    return math.ceil(panels / columns), columns


def _panel_grid(panels: int) -> tuple[Figure, list]:
    rows, columns = grid_shape(panels)
    figure = Figure(figsize=(PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel().tolist()
    for unused in axes[panels:]:
        unused.set_visible(False)
    return figure, axes[:panels]


def _save(figure: Figure, path: str) -> str:
    figure.savefig(path, dpi=DPI)
    return path


def _note(axes, text: str) -> None:
    axes.text(0.5, 0.5, textwrap.fill(text, 40), ha="center", va="center", fontsize=9, transform=axes.transAxes,
              bbox={"facecolor": "white", "edgecolor": "grey"})


def plot_roc_curves(splits: Sequence[SplitScores], path: str) -> str:
    """One panel per split, one ROC curve per score column (AUROC in the legend)."""
    figure, panels = _panel_grid(len(splits))
    for axes, split in zip(panels, splits):
        axes.set_title(f"ROC, {split.name} (n={len(split.is_false)}, errors={int(split.is_false.sum())})", fontsize=10)
        axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        axes.set_xlabel("false-positive rate (right answers flagged)")
        axes.set_ylabel("true-positive rate (errors flagged)")
        try:
            for key, values in split.scores.items():
                fpr, tpr = roc_curve(split.is_false, values)
                axes.plot(fpr, tpr, linewidth=1.4, label=f"{key} ({auroc(split.is_false, values):.3f})")
        except UndefinedMetricError as reason:
            _note(axes, f"n/a: {reason}")
            continue
        axes.legend(fontsize=7, loc="lower right")
    return _save(figure, path)


def plot_rejection_curves(splits: Sequence[SplitScores], path: str) -> str:
    """One panel per split: accuracy of the kept answers against the rejection rate, with oracle and random."""
    figure, panels = _panel_grid(len(splits))
    for axes, split in zip(panels, splits):
        n, n_errors = len(split.is_false), float(split.is_false.sum())
        axes.set_title(f"Accuracy-rejection, {split.name} (n={n})", fontsize=10)
        axes.set_xlabel("rejection rate (most uncertain first)")
        axes.set_ylabel("accuracy of the kept answers")
        for key, values in split.scores.items():
            coverage, accuracy = rejection_curve(split.is_false, values)
            axes.plot(1 - coverage, accuracy, linewidth=1.4, label=f"{key} (AURAC {accuracy.mean():.3f})")
        kept = np.arange(1, n + 1)
        oracle = np.minimum(kept, n - n_errors) / kept
        axes.plot(1 - kept / n, oracle, color="black", linestyle="--", linewidth=1,
                  label=f"oracle ({oracle_aurac(n, n_errors):.3f})")
        axes.axhline(1 - n_errors / n, color="grey", linestyle=":", linewidth=1, label=f"random ({1 - n_errors / n:.3f})")
        axes.set_xlim(0, 1)
        axes.legend(fontsize=7, loc="best")
    return _save(figure, path)


def plot_score_distributions(split: SplitScores, path: str, bins: int = 30) -> str:
    """One panel per score column: histograms of the score for right and for wrong answers."""
    figure, panels = _panel_grid(max(1, len(split.scores)))
    wrong = split.is_false.astype(bool)
    for axes, (key, values) in zip(panels, split.scores.items()):
        values = np.asarray(values, dtype=float)
        edges = np.histogram_bin_edges(values, bins=bins)
        for mask, name, colour in ((~wrong, "right", "tab:blue"), (wrong, "wrong", "tab:red")):
            if mask.any():
                axes.hist(values[mask], bins=edges, density=True, histtype="stepfilled", alpha=0.45, color=colour,
                          label=f"{name} (n={int(mask.sum())})")
        axes.set_title(f"{key}, {split.name}", fontsize=10)
        axes.set_xlabel("uncertainty (higher = more uncertain)")
        axes.set_ylabel("density")
        axes.legend(fontsize=7)
    return _save(figure, path)


def plotted_columns(joined: JoinedScores, max_curves: int) -> list[ScoreColumn]:
    """The columns drawn as curves: all when at most `max_curves`, else the best by AUROC over all questions.

    A legend of dozens of curves hides the panels; the tables always hold every column.
    """
    if len(joined.columns) <= max_curves:
        return list(joined.columns)

    def overall_auroc(column: ScoreColumn) -> float:
        try:
            return auroc(joined.is_false, column.values)
        except UndefinedMetricError:
            return float("-inf")

    return sorted(joined.columns, key=overall_auroc, reverse=True)[:max_curves]


def write_plots(output_dir: str, joined: JoinedScores, max_curves: int = 10) -> list[str]:
    """roc_curves.png and rejection_curves.png (one panel per split) and score_distributions.png."""
    curves = plotted_columns(joined, max_curves)
    masks = split_masks(joined.categories, joined.predictions)
    splits = [SplitScores(split, joined.is_false[mask], {c.key: c.values[mask] for c in curves})
              for split, mask in masks.items()]
    everything = SplitScores(ALL_SPLIT, joined.is_false, {c.key: c.values for c in joined.columns})
    return [
        plot_roc_curves(splits, os.path.join(output_dir, "roc_curves.png")),
        plot_rejection_curves(splits, os.path.join(output_dir, "rejection_curves.png")),
        plot_score_distributions(everything, os.path.join(output_dir, "score_distributions.png")),
    ]


def plot_score_histograms(report: Mapping[str, Mapping], keys: Sequence[str], path: str) -> str:
    """One panel per score column: its histogram on every split of `distributions.distributions`
    (shared edges, so the splits compare bin by bin), as step lines; no labels needed."""
    figure, panels = _panel_grid(max(1, len(keys)))
    for axes, key in zip(panels, keys):
        for split, entry in report.items():
            histogram = entry[key]["histogram"]
            axes.stairs(histogram["counts"], histogram["edges"], label=f"{split} (n={entry[key]['n']})",
                        linewidth=2 if split == ALL_SPLIT else 1)
        axes.set_title(key, fontsize=10)
        axes.set_xlabel("uncertainty (higher = more uncertain)")
        axes.set_ylabel("questions")
        axes.legend(fontsize=7)
    return _save(figure, path)
