"""VL-Uncertainty (Zhang, Zhang & Zheng, arXiv 2411.11919): semantic entropy of the answers to
perturbed prompts, image and question perturbed together.

Source: github.com/Ruiyang-061X/VL-Uncertainty @ 793f9118 (VL_Uncertainty.py
`perturbation_of_visual_prompt`, `perturbation_of_textual_prompt`,
`combination_of_perturbed_prompt` "progressively", `uncertainty_estimation`;
util/visual_perturbation.py `image_blurring`; run/run_*.sh for llava-1.5-7b-hf). Pair i of 5
is the image under PIL's GaussianBlur of radius r_i with the i-th rephrasing of the question
(the authors' rephraser, Qwen2.5-3B-Instruct, at temperature 0.1, 0.2, ..., 0.5; the answer-format
line is kept). One answer is sampled per pair and

    VL-Uncertainty = -sum over meaning clusters c of (n_c / 5) log2(n_c / 5)

Published levels for LLaVA-1.5-7B: radii 0.6..1.4 with sampling temperature 1.5 (MM-Vet);
radii 0.1..1.0 with 1.0 (MMMU) or 0.5 (ScienceQA, LLaVA-Bench). None is for POPE.

Here a POPE answer's meaning is its first token: "yes", "no" or "other" (every other token,
one cluster). The rephrasings are five fixed rewordings of POPE's template, ordered from the
nearest to the freest, in place of the LLM rephraser. Besides the sampled score, the exact
expectation of it over the five draws is available (no sampling noise).

Extra forward passes (`semantic_entropy.probes.baselines`, pass D): one prefill per image and
blur radius (5 per image), shared by its questions, and per question 5 rephrased branches (and
5 unreworded ones for the blur-only ablation) in one tree step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from PIL import ImageFilter

from llava.constants import POPE_ANSWER_SUFFIX
from semantic_entropy.probes.glsim import pope_object

# run/run_{MMVet,MMMU,ScienceQA,LLaVABench}.sh, llava-1.5-7b-hf: benchmark -> (blur radii, sampling temperature).
PUBLISHED_SETTINGS = {
    "MMVet": ((0.6, 0.8, 1.0, 1.2, 1.4), 1.5),
    "MMMU": ((0.1, 0.3, 0.5, 0.7, 1.0), 1.0),
    "ScienceQA": ((0.1, 0.3, 0.5, 0.7, 1.0), 0.5),
    "LLaVABench": ((0.1, 0.3, 0.5, 0.7, 1.0), 0.5),
}
# Ordered from the nearest to the freest, as the authors' rephrasings at rising temperature.
REPHRASINGS = (
    "Is there {article} {name} in this image?",
    "Is there {article} {name} in the picture?",
    "In the image, is there {article} {name}?",
    "Can you see {article} {name} in the image?",
    "Does the image contain {article} {name}?",
)
CLUSTERS = ("yes", "no", "other")


def rephrased_questions(text: str) -> list[str] | None:
    """The rephrasings of a POPE question, its answer-format line kept; None for other questions.

    >>> rephrased_questions("Is there an apple in the imange?" + POPE_ANSWER_SUFFIX)[2]
    'In the image, is there an apple?\\nAnswer the question using a single word or phrase.'
    >>> rephrased_questions("What is this?") is None
    True
    """
    parsed = pope_object(text)
    if parsed is None:
        return None
    suffix = POPE_ANSWER_SUFFIX if text.endswith(POPE_ANSWER_SUFFIX) else ""
    article, name = parsed
    return [template.format(article=article, name=name) + suffix for template in REPHRASINGS]


def blurred(image, radius: float):
    """The PIL image under a Gaussian blur of `radius` pixels (before the CLIP preprocessing)."""
    return image.filter(ImageFilter.GaussianBlur(radius=radius))


def cluster_masses(probs: torch.Tensor, yes_ids, no_ids, temperature: float) -> list[tuple[float, float, float]]:
    """(yes, no, other) mass of each row's first token at the sampling temperature: p^(1/T), renormalised.

    probs: (S, V) untempered first-token probabilities.

    >>> [[round(x, 6) for x in m] for m in cluster_masses(torch.tensor([[0.5, 0.25, 0.25]]), [0], [1], 0.5)]
    [[0.666667, 0.166667, 0.166667]]
    """
    if temperature <= 0:
        raise ValueError(f"the sampling temperature must be > 0, got {temperature}")
    tempered = torch.softmax(torch.log(probs.double()) / temperature, dim=-1)  # (S, V); squares .25, .0625, .0625 above
    yes, no = tempered[:, yes_ids].sum(dim=-1).tolist(), tempered[:, no_ids].sum(dim=-1).tolist()
    return [(y, n, max(0.0, 1.0 - y - n)) for y, n in zip(yes, no)]


def draw_clusters(masses: Sequence[tuple[float, float, float]], uniforms: Sequence[float]) -> list[str]:
    """One cluster per pair by inverse CDF over (yes, no, other), from uniforms in [0, 1).

    >>> draw_clusters([(0.8, 0.2, 0.0), (0.8, 0.2, 0.0)], [0.5, 0.9])
    ['yes', 'no']
    """
    drawn = []
    for mass, u in zip(masses, uniforms, strict=True):
        total, cumulative, chosen = sum(mass), 0.0, CLUSTERS[-1]
        for name, m in zip(CLUSTERS, mass):
            cumulative += m / total
            if u < cumulative:
                chosen = name
                break
        drawn.append(chosen)
    return drawn


def discrete_entropy_bits(clusters: Sequence[str]) -> float:
    """-sum_c (n_c / n) log2(n_c / n) over the clusters drawn.

    >>> round(discrete_entropy_bits(["yes", "yes", "no", "yes", "no"]), 6), discrete_entropy_bits(["no"] * 5)
    (0.970951, 0.0)
    """
    if not clusters:
        raise ValueError("need at least one answer")
    n = len(clusters)
    entropy = -math.fsum((c / n) * math.log2(c / n) for c in (clusters.count(k) for k in set(clusters)))
    return entropy if entropy > 0 else 0.0


def expected_discrete_entropy_bits(masses: Sequence[tuple[float, float, float]]) -> float:
    """The expectation of `discrete_entropy_bits` when each pair draws one cluster independently
    from its (yes, no, other) masses: exact, over the distribution of the cluster counts.

    Worked example: pairs sure of "yes" and even between yes and no: half the time both say
    yes (0 bits), half the time they differ (1 bit): .5.

    >>> expected_discrete_entropy_bits([(1.0, 0.0, 0.0), (0.5, 0.5, 0.0)])
    0.5
    """
    counts = {(0, 0, 0): 1.0}  # cluster counts -> probability, built one pair at a time
    for mass in masses:
        total = sum(mass)
        grown: dict[tuple[int, int, int], float] = {}
        for key, p in counts.items():
            for c, m in enumerate(mass):
                if m > 0:
                    new = tuple(k + (i == c) for i, k in enumerate(key))
                    grown[new] = grown.get(new, 0.0) + p * m / total
        counts = grown
    n = len(masses)
    return math.fsum(p * discrete_entropy_bits([CLUSTERS[c] for c in range(3) for _ in range(key[c])])
                     for key, p in counts.items()) if n else 0.0
