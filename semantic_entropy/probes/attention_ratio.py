"""The visual attention ratio of the middle layers (Jiang et al., "Devils in Middle Layers of
Large Vision-Language Models", CVPR 2025, arXiv 2411.16724).

Source: github.com/ZhangqiJiang07/middle_layers_indicating_hallucinations @ a0622a9d
(utils.py `attnw_over_vision_layer_head_selected_text`, middle_layers_indicating_hallucination.ipynb
"SVAR_5-18", extract_VAR.py, train.py --start-layer 5 --end-layer 18). For the query that
produces a token (the last row of the generation step that emits it):

    VAR(l, h) = sum over the image positions of the attention weight of head h in layer l
    SVAR      = sum over the layers 5..18 (both included) of the mean of VAR(l, h) over heads

Real object tokens receive a higher SVAR than hallucinated ones, so -SVAR is the uncertainty.
The authors score object tokens of captions; on POPE the token is the first answer token, whose
query is the prompt's last position.

Extra forward passes per question: none; the attention row comes from the shared real-image
pass (A) of `semantic_entropy.probes.baselines`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# Layers 5..18 of LLaVA-1.5-7B's 32 (the "visual information enrichment" stage), half-open.
SVAR_LAYERS = (5, 19)


def svar(layer_image_shares: Sequence[float], layers: tuple[int, int]) -> float:
    """Sum over the layers [a, b) of the head-mean attention mass on the image.

    layer_image_shares: (L,) per layer, the mean over heads of each head's image attention mass.

    >>> round(svar([0.9, 0.5, 0.25, 0.1], (1, 3)), 12)
    0.75
    """
    start, end = layers
    if not 0 <= start < end <= len(layer_image_shares):
        raise ValueError(f"layers [{start}, {end}) do not fit {len(layer_image_shares)} captured layers")
    return math.fsum(layer_image_shares[start:end])


def attention_ratio_uncertainty(layer_image_shares: Sequence[float], layers: tuple[int, int]) -> float:
    """-SVAR: the less the answer's query looks at the image in the middle layers, the more uncertain.

    >>> attention_ratio_uncertainty([0.9, 0.5, 0.25, 0.1], (1, 3))
    -0.75
    """
    return -svar(layer_image_shares, layers)
