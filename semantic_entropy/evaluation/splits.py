"""The subsets a report breaks the questions into, and the unit its bootstrap resamples.

Splits, in report order: POPE's categories (LLaVA's order), "all", then the direction of the
greedy answer, parsed as `llava.eval.eval_pope.parse_yes_no` parses it: "yes_answers" (its
errors are false "yes", objects that are not there) and "no_answers" (its errors are misses).
A score can flag one kind of error and not the other; the direction splits show each.
"""

from __future__ import annotations

import numpy as np

from llava.eval.eval_pope import category_order
from semantic_entropy.evaluation.joining import JoinedScores

ALL_SPLIT = "all"
DIRECTION_SPLITS = {"yes_answers": "yes", "no_answers": "no"}  # split -> parsed greedy answer
CLUSTER_UNITS = ("image", "question")
SPLIT_NOTES = {
    "yes_answers": 'greedy answer parsed as "yes"; its errors are false "yes"',
    "no_answers": 'greedy answer parsed as "no"; its errors are misses',
}


def split_masks(categories: np.ndarray, predictions: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The boolean mask of each split present: POPE categories, "all", then each answer direction given.

    >>> masks = split_masks(np.array(["random", "adversarial", "random", "adversarial"]),
    ...                     np.array(["yes", "no", "no", "no"]))
    >>> {name: int(mask.sum()) for name, mask in masks.items()}
    {'adversarial': 2, 'random': 2, 'all': 4, 'yes_answers': 1, 'no_answers': 3}
    >>> list(split_masks(np.array(["random"]), np.array(["no"])))  # no "yes" answer: no yes_answers split
    ['random', 'all', 'no_answers']
    """
    masks = {category: categories == category for category in category_order(categories.tolist())}
    masks[ALL_SPLIT] = np.ones(len(categories), dtype=bool)
    if predictions is not None:
        for split, answer in DIRECTION_SPLITS.items():
            mask = predictions == answer
            if mask.any():
                masks[split] = mask
    return masks


def resolve_cluster_unit(requested: str | None, joined: JoinedScores) -> str:
    """"image" when asked or by default when every question has an image; else "question".

    >>> plain = JoinedScores([1, 2], np.array(["random"] * 2), np.array([0.0, 1.0]), [])
    >>> resolve_cluster_unit(None, plain), resolve_cluster_unit("question", plain)
    ('question', 'question')
    """
    has_images = joined.images is not None and all(bool(image) for image in joined.images)
    if requested is None:
        return "image" if has_images else "question"
    if requested not in CLUSTER_UNITS:
        raise ValueError(f"--cluster-by must be one of {list(CLUSTER_UNITS)}, got {requested!r}")
    if requested == "image" and not has_images:
        raise ValueError("--cluster-by image needs an image for every question; the question records have none")
    return requested


def cluster_units(joined: JoinedScores, unit: str) -> np.ndarray:
    """(n,) the resampled unit of each question: its image, or the question itself.

    Images are named across splits, so in "all" an image's questions of every split move together.
    """
    if unit == "image":
        return np.asarray(joined.images)
    return np.arange(len(joined.question_ids))
