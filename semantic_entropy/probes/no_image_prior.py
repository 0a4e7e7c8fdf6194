"""The no-image prior and Post-Hoc Debias (Zhang et al., "Debiasing Multimodal Large Language
Models", arXiv 2403.05262).

The prior is the first-token yes/no distribution of the same prompt with the image removed
(not replaced): the authors' "None" input, the question alone in the conversation template.

Post-Hoc Debias calibrates the answer distribution p (yes, no) with the prior p_cf by the
affine map of contextual calibration with a diagonal W = diag(p_cf)^-1 and b = 0, per question
("individual" mode), then renormalises:

    q_c  ∝  p_c / (p_cf_c + 1e-4)        c in {yes, no}, p and p_cf renormalised over yes + no

Source: github.com/yfzhang114/LLaVA-Align @ dfbecfa7 (experiments/eval/eval_pope_calibrate.py:
`calibrate_weight` mode "diagonal_W", calibrate_mode "individual", p_cf + 1e-4;
experiments/eval/calibrate/llava_calibrate.py: the "none" input has no image and no
"<image>\\n"). The authors use q to answer; as an uncertainty score we take its binary entropy,
the training-free reading of a calibrated distribution (higher = more uncertain).

Extra forward passes per question: one text-only row of its prompt and answer (pass C of
`semantic_entropy.probes.baselines`, shared with VAUQ's no-image variant).
"""

from __future__ import annotations

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.conversation import build_prompt
from semantic_entropy.scoring.measures import binary_entropy

POST_HOC_EPSILON = 1e-4  # added to the renormalised prior before inverting it, as the authors do


def no_image_prompt(question: str, conv_mode: str) -> str:
    """The single-turn prompt of `question` with the image line removed.

    >>> no_image_prompt("Is there a dog?", "vicuna_v1").endswith("questions. USER: Is there a dog? ASSISTANT:")
    True
    """
    return build_prompt(question, conv_mode).replace(DEFAULT_IMAGE_TOKEN + "\n", "", 1)


def _renormalised(mass: tuple[float, float]) -> tuple[float, float]:
    total = mass[0] + mass[1]
    if not (mass[0] >= 0 and mass[1] >= 0) or total <= 0:
        raise ValueError(f"yes/no mass must be non-negative with a positive sum, got {mass}")
    return mass[0] / total, mass[1] / total


def post_hoc_debias(real_mass: tuple[float, float], prior_mass: tuple[float, float],
                    epsilon: float = POST_HOC_EPSILON) -> float:
    """q(yes) of the calibrated distribution q ∝ p / (p_cf + epsilon).

    Worked example: p = (.6, .2) -> (.75, .25); prior (.9, .1) -> (.9001, .1001);
    q ∝ (.75 / .9001, .25 / .1001) = (.833241, 2.497502), q(yes) = .250167. A prior that leans
    to "yes" moves a "yes" answer towards "no".

    >>> round(post_hoc_debias((0.6, 0.2), (0.9, 0.1)), 6)
    0.250167
    >>> round(post_hoc_debias((0.6, 0.2), (0.5, 0.5)), 6)  # a uniform prior changes nothing
    0.75
    """
    p_yes, p_no = _renormalised(real_mass)
    c_yes, c_no = _renormalised(prior_mass)
    yes, no = p_yes / (c_yes + epsilon), p_no / (c_no + epsilon)
    return yes / (yes + no)


def calibrated_entropy(real_mass: tuple[float, float], prior_mass: tuple[float, float]) -> float:
    """Binary entropy (nats) of the Post-Hoc-Debias distribution.

    >>> round(calibrated_entropy((0.6, 0.2), (0.9, 0.1)), 6), round(calibrated_entropy((0.6, 0.2), (0.1, 0.9)), 6)
    (0.562518, 0.154177)
    """
    return binary_entropy(post_hoc_debias(real_mass, prior_mass))
