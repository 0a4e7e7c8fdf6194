"""Grounding math of one forward pass: where a model's image tokens say an object is.

Pure functions, tensors in, tensors out (no model, no hooks):

- `logit_lens`: per image token, the log-probability of an object's word tokens when the
  token's hidden state is read through the final norm and the LM head (the caller applies
  the norm; pass the normed hidden states);
- `patch_similarity`: cosine similarity of the object's token hidden state(s) to each image
  token's hidden state (GLSim's object-to-patch similarity);
- `top_k_mean`: the mean of the K largest per-patch scores (a scalar evidence);
- `box_patch_mask`: which of the 24x24 patches an object's box touches after LLaVA's
  pad-to-square (the image pasted centred) and resize;
- `pointing_hit`: whether the arg-max patch of a score map falls in the object's patches;
  `pointing_chance` is the hit rate of a uniformly random patch (the mask's mean).
"""

from __future__ import annotations

import torch


def logit_lens(hidden: torch.Tensor, unembed: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """(P, H) normed hidden states of image tokens, (V, H) LM head, (K,) object token ids -> (P,).

    Mean over the K tokens of log softmax(hidden @ unembed.T)[:, token].

    >>> h = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> w = torch.tensor([[5.0, 0.0], [0.0, 5.0], [0.0, 0.0]])
    >>> lens = logit_lens(h, w, torch.tensor([0]))
    >>> bool(lens[0] > lens[1]), lens.shape
    (True, torch.Size([2]))
    """
    logprobs = torch.log_softmax(hidden.float() @ unembed.float().T, dim=-1)  # (P, V)
    return logprobs[:, token_ids].mean(dim=-1)


def patch_similarity(object_hidden: torch.Tensor, patch_hidden: torch.Tensor) -> torch.Tensor:
    """(K, H) or (H,) object token state(s), (P, H) image token states -> (P,) cosine similarity.

    Several object tokens are averaged first.

    >>> patch_similarity(torch.tensor([1.0, 0.0]), torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])).tolist()
    [1.0, 0.0, -1.0]
    """
    query = object_hidden.float().reshape(-1, patch_hidden.shape[-1]).mean(dim=0)  # (H,)
    return torch.nn.functional.cosine_similarity(patch_hidden.float(), query[None, :], dim=-1)


def top_k_mean(scores: torch.Tensor, k: int) -> torch.Tensor:
    """(..., P) scores -> (...) mean of the k largest.

    >>> round(float(top_k_mean(torch.tensor([0.1, 0.9, 0.5, 0.3]), 2)), 6)
    0.7
    """
    return scores.topk(min(k, scores.shape[-1]), dim=-1).values.mean(dim=-1)


def box_patch_mask(bbox, width: int, height: int, grid: int = 24) -> torch.Tensor:
    """(grid * grid,) bool: the patches a pixel box (x0, y0, x1, y1; x1, y1 exclusive) overlaps.

    The image is padded to a square of side max(width, height) with the image pasted centred
    at offset (side - min side) // 2, as LLaVA's expand2square, then resized to the grid.

    >>> m = box_patch_mask((0, 0, 10, 10), 240, 240, grid=24)  # 10 px of 240 = one patch
    >>> int(m.sum()), bool(m[0])
    (1, True)
    >>> m = box_patch_mask((0, 0, 120, 60), 120, 60, grid=4)    # wide image: padded top and bottom
    >>> m.reshape(4, 4).int().tolist()
    [[0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]]
    """
    side = max(width, height)
    dx, dy = (side - width) // 2, (side - height) // 2
    x0, y0, x1, y1 = bbox
    scale = grid / side
    edges = torch.arange(grid + 1, dtype=torch.float64)
    # Patch j spans [j, j + 1) in grid units; overlap if the box's interval crosses it.
    bx0, bx1 = (x0 + dx) * scale, (x1 + dx) * scale
    by0, by1 = (y0 + dy) * scale, (y1 + dy) * scale
    cols = (edges[1:] > bx0) & (edges[:-1] < bx1)  # (grid,)
    rows = (edges[1:] > by0) & (edges[:-1] < by1)  # (grid,)
    return (rows[:, None] & cols[None, :]).flatten()


def pointing_hit(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(..., P) scores and (..., P) bool masks -> (...) bool: the arg-max patch lies in the mask.

    >>> pointing_hit(torch.tensor([[0.1, 0.9, 0.2], [0.8, 0.1, 0.0]]),
    ...              torch.tensor([[False, True, False], [False, True, True]])).tolist()
    [True, False]
    """
    return mask.gather(-1, scores.argmax(dim=-1, keepdim=True)).squeeze(-1)


def pointing_chance(mask: torch.Tensor) -> torch.Tensor:
    """(..., P) bool masks -> (...) hit rate of a uniformly random patch.

    >>> float(pointing_chance(torch.tensor([True, False, False, False])))
    0.25
    """
    return mask.float().mean(dim=-1)
