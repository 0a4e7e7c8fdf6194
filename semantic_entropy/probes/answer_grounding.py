"""The method-v2 scores (docs/method.md, "Method v2"): the answer read against evidence that does
not come from the answer's own first-token distribution. Pure functions of numbers.

Notation: p = yes / (yes + no) of the first answer token with the real image, H(p) its binary
entropy (nats), a the greedy answer as POPE's evaluation parses it ("yes" or "no"). Every score:
higher = more uncertain.

(a) `grounding_disagreement`: u = H(p) + ln 2 * ([a = yes] (1 - e) + [a = no] e), with e in
    [0, 1] the calibrated evidence that the asked object is in the image (`calibrated_evidence`
    of a grounding statistic read from the same forward pass: the logit lens over image tokens,
    or the object token's similarity with them). A "yes" the grounding does not support, or a
    "no" it contradicts, gains up to ln 2.
(b) `counterfactual_disagreement`: u = H(p) + w ln 2 * c, with c the probability of "yes" in a
    counterfactual chosen by the answer: for a "yes", p(yes) with the object's attended region
    erased (a "yes" that survives the erasure does not rest on the region); for a "no", the
    largest p(yes) over crops of the image (a "no" that a zoomed-in view turns into "yes" missed
    something).
(c) `prior_vauq`: u = H - alpha (H_mask - H) + beta * pi_a (bits), VAUQ's signed entropy
    change (H, H_mask: mean answer-step entropies with the image and with its most attended
    tokens hidden) plus the no-image prior's probability pi_a of the answer given: an answer the
    image barely moves and the language prior already gives is suspect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from semantic_entropy.probes import vauq
from semantic_entropy.scoring.measures import binary_entropy

LN2 = math.log(2)


def p_yes(mass: tuple[float, float]) -> float:
    """yes / (yes + no) of a (yes mass, no mass) pair.

    >>> p_yes((0.375, 0.125)), round(p_yes((0.6, 0.2)), 12)
    (0.75, 0.75)
    """
    yes, no = mass
    if not (yes >= 0 and no >= 0) or yes + no <= 0:
        raise ValueError(f"yes/no mass must be non-negative with a positive sum, got {mass}")
    return yes / (yes + no)


def _check_answer(answer: str) -> None:
    if answer not in ("yes", "no"):
        raise ValueError(f"the answer must be 'yes' or 'no', got {answer!r}")


def top_k_mean(values_descending: Sequence[float], k: int) -> float:
    """Mean of the first k values of a list sorted high to low (all of them when shorter).

    >>> top_k_mean([0.9, 0.5, 0.1], 2), top_k_mean([0.9, 0.5, 0.1], 5)
    (0.7, 0.5)
    """
    if k < 1 or not values_descending:
        raise ValueError(f"need k >= 1 and at least one value, got k={k} and {len(values_descending)} values")
    head = values_descending[:k]
    return math.fsum(head) / len(head)


def calibrated_evidence(statistic: float, slope: float, intercept: float) -> float:
    """e = sigmoid(slope * statistic + intercept): P(object present) from a grounding statistic,
    with the logistic calibration fitted on the validation world.

    >>> calibrated_evidence(0.0, 2.0, 0.0), round(calibrated_evidence(1.0, 2.0, -1.0), 6)
    (0.5, 0.731059)
    """
    z = slope * statistic + intercept
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def grounding_disagreement(mass: tuple[float, float], answer: str, evidence: float) -> float:
    """(a) H(p) + ln 2 * ([a = yes] (1 - e) + [a = no] e).

    Worked example: p = (.9, .1), e = .2: "yes" -> .325083 + .8 ln 2 = .879601;
    "no" with p = (.1, .9) -> .325083 + .2 ln 2 = .463712.

    >>> round(grounding_disagreement((0.9, 0.1), "yes", 0.2), 6), round(grounding_disagreement((0.1, 0.9), "no", 0.2), 6)
    (0.879601, 0.463712)
    """
    _check_answer(answer)
    if not 0.0 <= evidence <= 1.0:
        raise ValueError(f"the grounding evidence must be in [0, 1], got {evidence}")
    against = 1.0 - evidence if answer == "yes" else evidence
    return binary_entropy(p_yes(mass)) + LN2 * against


def counterfactual_yes(answer: str, erased_mass: tuple[float, float], crop_masses: Sequence[tuple[float, float]]) -> float:
    """c: p(yes) with the object's region erased for a "yes"; the largest p(yes) over the crops for a "no".

    >>> counterfactual_yes("yes", (0.375, 0.125), [(0.9, 0.1)]), counterfactual_yes("no", (0.75, 0.25), [(0.2, 0.8), (0.6, 0.4)])
    (0.75, 0.6)
    """
    _check_answer(answer)
    if answer == "yes":
        return p_yes(erased_mass)
    if not crop_masses:
        raise ValueError("a 'no' answer needs at least one crop")
    return max(p_yes(mass) for mass in crop_masses)


def counterfactual_disagreement(mass: tuple[float, float], answer: str, erased_mass: tuple[float, float],
                                crop_masses: Sequence[tuple[float, float]], weight: float = 1.0) -> float:
    """(b) H(p) + weight * ln 2 * c, c = `counterfactual_yes`.

    Worked example: a "yes" at p = (.9, .1) whose erased image keeps p(yes) = .75 scores
    .325083 + .75 ln 2 = .844943; a "no" at p = (.1, .9) whose best crop gives p(yes) = .6
    scores .325083 + .6 ln 2 = .740971.

    >>> round(counterfactual_disagreement((0.9, 0.1), "yes", (0.3, 0.1), []), 6)
    0.844943
    >>> round(counterfactual_disagreement((0.1, 0.9), "no", (0.3, 0.1), [(0.2, 0.8), (0.6, 0.4)]), 6)
    0.740971
    """
    return binary_entropy(p_yes(mass)) + weight * LN2 * counterfactual_yes(answer, erased_mass, crop_masses)


def answer_prior(prior_mass: tuple[float, float], answer: str) -> float:
    """pi_a: the no-image prior's renormalised probability of the answer given.

    >>> answer_prior((0.375, 0.125), "yes"), answer_prior((0.375, 0.125), "no")
    (0.75, 0.25)
    """
    _check_answer(answer)
    yes = p_yes(prior_mass)
    return yes if answer == "yes" else 1.0 - yes


def prior_vauq(entropies: Sequence[float], masked_entropies: Sequence[float], prior_mass: tuple[float, float],
               answer: str, alpha: float, beta: float) -> float:
    """(c) H - alpha (H_mask - H) + beta * pi_a, H and H_mask the mean step entropies (bits).

    Worked example: steps 1 and 0 bits, 2 and 1 masked: H = .5, H_mask = 1.5; prior (.6, .2),
    answer "yes": pi = .75; alpha .6, beta 1: .5 - .6 + .75 = .65. With beta 0 it is VAUQ (-.1).

    >>> round(prior_vauq([1.0, 0.0], [2.0, 1.0], (0.6, 0.2), "yes", 0.6, 1.0), 12)
    0.65
    >>> round(prior_vauq([1.0, 0.0], [2.0, 1.0], (0.6, 0.2), "no", 0.6, 0.0), 12)
    -0.1
    """
    return vauq.vauq_score(entropies, masked_entropies, alpha) + beta * answer_prior(prior_mass, answer)
