"""VAUQ (Park et al., arXiv 2602.21054): predictive entropy minus alpha times the
Image-Information Score, the entropy added when the most attended image tokens are hidden.

Source: github.com/deeplearning-wisc/vauq @ 72d3a557 (vauq/scoring.py, lvlm/llava.py,
metrics.py, run_vauq.py). For an answer y_1..y_n teacher-forced after the prompt:

    H      = mean over the n answer steps of the entropy (bits) of the next-token distribution
    H_mask = the same with the top `mask_ratio` share of the image tokens hidden from every query
    IS     = H_mask - H
    VAUQ   = H - alpha * IS          (higher = more uncertain)

The hidden tokens are the int(ratio * 576) image positions with the highest attention from the
answer tokens' positions (rows prompt_len.. of the attention map, i.e. the queries at y_1..y_n),
averaged over layers 10..24, heads and those rows. The authors set (ratio, alpha) per benchmark
for LLaVA-1.5-7B (`PUBLISHED_SETTINGS`); none is for POPE.

The no-image variant hides every image token by removing it (`no_image_prior.no_image_prompt`),
with the alpha of the authors' setting that hides all of them (ratio 1.0: 0.6).

Extra forward passes per question (`semantic_entropy.probes.baselines`): one row of its prompt
and answer with the hidden image tokens left out (pass B), one text-only row for the variant
(pass C); H and the ranking come from the shared real-image pass (A).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

# run_vauq.py: DEFAULT_HYPERPARAMETERS["llava-1.5-7b-hf"], benchmark -> (topk_ratio, alpha).
PUBLISHED_SETTINGS = {"MMVet": (0.4, 0.6), "CVBench": (0.1, 1.5), "VILP": (1.0, 0.6)}
# run_vauq.py: --layer_start 10 --layer_end 25 (half-open), of LLaVA-1.5-7B's 32 layers.
VAUQ_LAYERS = (10, 25)
NO_IMAGE_ALPHA = PUBLISHED_SETTINGS["VILP"][1]  # the published alpha with every image token hidden


def step_entropies_bits(logits: torch.Tensor) -> list[float]:
    """Entropy in bits of each row of (n, V) logits (-inf entries have probability 0).

    >>> step_entropies_bits(torch.tensor([[0.0, 0.0], [0.0, float("-inf")]]))
    [1.0, 0.0]
    """
    log_p = torch.log_softmax(logits.double(), dim=-1)  # (n, V)
    entropy = -(log_p.exp() * log_p.nan_to_num(neginf=0.0)).sum(dim=-1) / math.log(2)
    return [h if h > 0 else 0.0 for h in entropy.tolist()]  # one transfer from the device


def hidden_patch_count(ratio: float, num_patches: int) -> int:
    """max(1, int(ratio * N)), as the authors' code rounds (down).

    >>> hidden_patch_count(0.4, 576), hidden_patch_count(0.1, 576), hidden_patch_count(1.0, 576)
    (230, 57, 576)
    """
    if not 0 < ratio <= 1:
        raise ValueError(f"the VAUQ mask ratio must be in (0, 1], got {ratio}")
    return max(1, int(num_patches * ratio))


def most_attended_patches(image_attention: torch.Tensor, count: int) -> torch.Tensor:
    """The `count` image positions with the highest mean attention.

    image_attention: (A, L', N) head-mean attention of the answer rows in the chosen layers.

    >>> attention = torch.tensor([[[0.1, 0.5, 0.2, 0.2]], [[0.3, 0.1, 0.4, 0.2]]])  # 2 rows, 1 layer
    >>> most_attended_patches(attention, 2).tolist()  # means .2, .3, .3, .2
    [1, 2]
    """
    return image_attention.mean(dim=(0, 1)).topk(count).indices.sort().values  # (count,)


def vauq_score(entropies: Sequence[float], masked_entropies: Sequence[float], alpha: float) -> float:
    """H - alpha * (H_mask - H), H and H_mask the mean step entropies (bits).

    Worked example: steps of 1 and 0 bits, 2 and 1 bits masked: H = .5, H_mask = 1.5,
    IS = 1, VAUQ = .5 - .6 * 1 = -.1 (alpha .6).

    >>> round(vauq_score([1.0, 0.0], [2.0, 1.0], 0.6), 12)
    -0.1
    """
    if len(entropies) == 0 or len(entropies) != len(masked_entropies):
        raise ValueError(f"need one masked entropy per answer step, got {len(masked_entropies)} "
                         f"for {len(entropies)}")
    h = math.fsum(entropies) / len(entropies)
    h_masked = math.fsum(masked_entropies) / len(masked_entropies)
    return h - alpha * (h_masked - h)
