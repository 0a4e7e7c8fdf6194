"""Choosing the method-v2 settings on a validation world (docs/method.md, "Method v2"):
the grounding calibration, each score's hyperparameters, the best published baseline and the
primary candidate, all by AUROC of the errors over the validation world's questions.

Everything here reads validation records only; `scripts/choose_method_settings.py` runs it and
writes `semantic_entropy/scoring/method_v2_settings.json` before any test-world run.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from semantic_entropy.evaluation.metrics import auroc
from semantic_entropy.probes import answer_grounding as g
from semantic_entropy.scoring.measures import binary_entropy
from semantic_entropy.scoring.method_settings import GROUNDING_STATISTICS, TOP_FIELD

TOP_K_CANDIDATES = (1, 4, 16)
WEIGHT_CANDIDATES = (0.25, 0.5, 1.0, 2.0)
ALPHA_CANDIDATES = (0.0, 0.3, 0.6, 1.0, 1.5)
BETA_CANDIDATES = (0.0, 0.25, 0.5, 1.0, 2.0)
# The published detectors of docs/baselines.md, the best of which every test table is paired against.
PUBLISHED_BASELINES = ("vauq", "vauq_no_image", "attention_ratio_svar", "glsim", "vl_uncertainty",
                       "vl_uncertainty_expected", "no_image_prior_entropy", "no_image_calibrated_entropy")
CANDIDATES = ("grounding_disagreement", "counterfactual_disagreement", "prior_vauq")


@dataclass(frozen=True)
class ValidationQuestion:
    """One validation question with what the choices read (from generations_io and join_pope)."""

    mass: tuple[float, float]  # first-token (yes, no) mass
    answer: str  # "yes" / "no"
    wrong: bool
    object_present: bool  # POPE's label is "yes"
    probes: object  # generations_io.MethodProbes
    baselines: object  # generations_io.BaselineProbes


def fit_calibration(statistic: np.ndarray, present: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) of the logistic regression of P(object present) on a grounding statistic
    (nearly unregularised, C = 1e6).

    >>> x = np.array([0.0, 1.0, 2.0, 3.0, 0.5, 2.5]); y = np.array([0, 0, 1, 1, 1, 0])
    >>> slope, intercept = fit_calibration(x, y)
    >>> slope > 0
    True
    """
    from sklearn.linear_model import LogisticRegression

    if len(set(present.tolist())) < 2:
        raise ValueError("the calibration needs questions about present and absent objects")
    model = LogisticRegression(C=1e6, max_iter=10000).fit(statistic[:, None], present)
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def _auroc(wrong: np.ndarray, scores: Sequence[float]) -> float:
    return float(auroc(wrong, np.asarray(scores, dtype=np.float64)))


def grounding_grid(questions: Sequence[ValidationQuestion]) -> list[dict]:
    """Every (statistic, layer, top_k): the calibration, the statistic's AUROC for object presence
    and grounding_disagreement's AUROC for the errors."""
    wrong = np.array([q.wrong for q in questions])
    present = np.array([q.object_present for q in questions])
    layers = sorted(questions[0].probes.logit_lens_top)
    rows = []
    statistics = [s for s in GROUNDING_STATISTICS if getattr(questions[0].probes, TOP_FIELD[s])]
    for statistic, layer, k in itertools.product(statistics, layers, TOP_K_CANDIDATES):
        tops = [getattr(q.probes, TOP_FIELD[statistic])[layer] for q in questions]
        x = np.array([g.top_k_mean(t, k) for t in tops])
        slope, intercept = fit_calibration(x, present)
        evidence = [g.calibrated_evidence(v, slope, intercept) for v in x]
        scores = [g.grounding_disagreement(q.mass, q.answer, e) for q, e in zip(questions, evidence)]
        rows.append({"statistic": statistic, "layer": layer, "top_k": k, "slope": slope, "intercept": intercept,
                     "presence_auroc": _auroc(present, x), "auroc": _auroc(wrong, scores)})
    return rows


def counterfactual_grid(questions: Sequence[ValidationQuestion]) -> list[dict]:
    wrong = np.array([q.wrong for q in questions])
    rows = []
    for fraction, weight in itertools.product(sorted(questions[0].probes.erased_masses), WEIGHT_CANDIDATES):
        scores = [g.counterfactual_disagreement(q.mass, q.answer, q.probes.erased_masses[fraction],
                                                q.probes.crop_masses, weight) for q in questions]
        rows.append({"erase_fraction": fraction, "weight": weight, "auroc": _auroc(wrong, scores)})
    return rows


def prior_vauq_grid(questions: Sequence[ValidationQuestion]) -> list[dict]:
    wrong = np.array([q.wrong for q in questions])
    rows = []
    for alpha, beta in itertools.product(ALPHA_CANDIDATES, BETA_CANDIDATES):
        scores = [g.prior_vauq(q.baselines.vauq_entropies, q.baselines.vauq_masked_entropies,
                               q.baselines.no_image_mass, q.answer, alpha, beta) for q in questions]
        rows.append({"alpha": alpha, "beta": beta, "auroc": _auroc(wrong, scores)})
    return rows


def best(rows: Sequence[dict]) -> dict:
    """The row of highest AUROC; ties go to the first (the grids list simpler settings first).

    >>> best([{"auroc": 0.6, "k": 1}, {"auroc": 0.7, "k": 2}, {"auroc": 0.7, "k": 3}])["k"]
    2
    """
    return max(rows, key=lambda row: row["auroc"])  # max keeps the first of equal keys


def yes_no_entropy_auroc(questions: Sequence[ValidationQuestion]) -> float:
    return _auroc(np.array([q.wrong for q in questions]), [binary_entropy(g.p_yes(q.mass)) for q in questions])


def choose(questions: Sequence[ValidationQuestion], baseline_aurocs: dict[str, float], fitted_on: str) -> dict:
    """The settings file's content: each score's best setting, the best published baseline and
    the primary candidate (the highest validation AUROC of the three), with the grids."""
    grids = {"grounding": grounding_grid(questions), "counterfactual": counterfactual_grid(questions),
             "prior_vauq": prior_vauq_grid(questions)}
    chosen = {name: best(rows) for name, rows in grids.items()}
    candidate_auroc = {"grounding_disagreement": chosen["grounding"]["auroc"],
                       "counterfactual_disagreement": chosen["counterfactual"]["auroc"],
                       "prior_vauq": chosen["prior_vauq"]["auroc"]}
    published = {name: value for name, value in baseline_aurocs.items() if name in PUBLISHED_BASELINES}
    if not published:
        raise ValueError(f"no published baseline among the validation scores; expected some of {PUBLISHED_BASELINES}")
    keep = {"grounding": ("statistic", "layer", "top_k", "slope", "intercept"),
            "counterfactual": ("erase_fraction", "weight"), "prior_vauq": ("alpha", "beta")}
    return {
        "fitted_on": fitted_on,
        **{name: {key: chosen[name][key] for key in keys} for name, keys in keep.items()},
        "primary": max(CANDIDATES, key=lambda name: candidate_auroc[name]),
        "best_published_baseline": max(published, key=published.get),
        "validation": {"questions": len(questions), "errors": int(sum(q.wrong for q in questions)),
                       "yes_no_entropy_auroc": yes_no_entropy_auroc(questions),
                       "candidate_auroc": candidate_auroc, "published_baseline_auroc": published,
                       "grids": grids},
    }
