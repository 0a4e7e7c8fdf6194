"""Batch plumbing shared by the training stages: labels aligned with image tokens, right padding."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX


def multimodal_labels(labels: Sequence[torch.Tensor], input_ids: Sequence[torch.Tensor],
                      num_image_tokens: int) -> torch.Tensor:
    """(B, T) labels aligned with `embed_multimodal`'s left-padded rows.

    Each image slot becomes `num_image_tokens` IGNORE positions; pads on the left are IGNORE.

    >>> ids = [torch.tensor([1, IMAGE_TOKEN_INDEX, 5]), torch.tensor([1, 7])]
    >>> multimodal_labels([torch.tensor([-100, -100, 5]), torch.tensor([-100, 7])], ids, 2).tolist()
    [[-100, -100, -100, 5], [-100, -100, -100, 7]]
    """
    rows = []
    for ids, row in zip(input_ids, labels):
        pieces, start = [], 0
        for slot in (ids == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist():
            pieces += [row[start:slot], row.new_full((num_image_tokens,), IGNORE_INDEX)]
            start = slot + 1
        pieces.append(row[start:])
        rows.append(torch.cat(pieces))
    longest = max(len(r) for r in rows)
    out = torch.full((len(rows), longest), IGNORE_INDEX, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, longest - len(r):] = r
    return out


def to_right_padding(rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Left-padded (B, T, ...) rows, given their (B, T) mask, with the padding moved to the right.

    >>> to_right_padding(torch.tensor([[0, 1, 2], [3, 4, 5]]), torch.tensor([[0, 1, 1], [1, 1, 1]])).tolist()
    [[1, 2, 0], [3, 4, 5]]
    """
    pads = (mask.shape[1] - mask.sum(dim=1)).tolist()
    return torch.stack([torch.roll(row, -int(pad), dims=0) for row, pad in zip(rows, pads)])
