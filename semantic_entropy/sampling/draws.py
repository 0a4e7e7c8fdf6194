"""The sampling distribution of a row of logits and inverse-CDF draws from it (shared by both decoders)."""

from __future__ import annotations

import torch


def sampling_logits(logits: torch.Tensor, settings) -> torch.Tensor:
    """(R, V) tempered logits with top-k / top-p filtering (none by default: full multinomial)."""
    scaled = logits / settings.temperature
    if settings.top_k is not None and settings.top_k < scaled.shape[-1]:
        kth = scaled.topk(settings.top_k, dim=-1).values[:, -1:]  # (R, 1)
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if settings.top_p is not None and settings.top_p < 1.0:
        sorted_logits, order = scaled.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (the token crossing it included).
        drop = probs.cumsum(dim=-1) - probs >= settings.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        scaled = torch.full_like(scaled, float("-inf")).scatter(1, order, sorted_logits)
    return scaled


def sampling_cdf(logits: torch.Tensor, settings) -> torch.Tensor:
    """(R, V) float64 cumulative sampling probabilities of (R, V) logits."""
    return sampling_logits(logits, settings).double().softmax(dim=-1).cumsum(dim=-1)


def inverse_cdf(rows: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """(D,) tokens: token j of row d for uniforms[d] where rows[d, j-1] <= u < rows[d, j].

    rows: (D, V) float64 cumulative probabilities; uniforms: (D,) in [0, 1).
    """
    targets = (uniforms * rows[:, -1]).unsqueeze(1)  # scale by the total to absorb rounding
    tokens = torch.searchsorted(rows, targets, right=True).squeeze(1)
    return tokens.clamp(max=rows.shape[1] - 1)


def draw_tokens(cdf: torch.Tensor, row_of_draw: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draws from cdf (R, V) float64; row_of_draw: (D,) row per draw; uniforms: (D,). Returns (D,)."""
    return inverse_cdf(cdf.index_select(0, row_of_draw), uniforms)
