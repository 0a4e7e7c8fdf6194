"""Declarative registry of uncertainty measures.

Each `Measure` declares the generation fields it needs (names from `generations_io`), what it
takes from the judge (nothing, the clusters, or the similarity matrix), and a function of the
per-question `MeasureInputs`. A record that lacks a needed field skips the measure with a
message instead of failing. A score's name carries every setting that changes it
(`score_name`): judge-dependent measures computed with a judge other than "exact" get the
judge's tag, the strictness (cluster measures) and `_noquestion` when the NLI judge sees bare
answers, e.g. `semantic_entropy_nli_strict`, `eigval_laplacian_nli_noquestion`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from llava.eval.eval_pope import parse_yes_no
from semantic_entropy.sampling.generations_io import (
    FIRST_TOKEN_YES_NO_MASS,
    GREEDY_TEXT,
    GREEDY_TOKEN_ENTROPIES,
    GREEDY_TOKEN_LOGPROBS,
    P_TRUE,
    SAMPLE_TEXTS,
    SAMPLE_TOKEN_LOGPROBS,
    QuestionGenerations,
    image_variant_field,
    question_variant_field,
)
from semantic_entropy.scoring import measures as m
from semantic_entropy.scoring.judges import Judgement

USES_NOTHING = "nothing"  # the judge does not change the score
USES_CLUSTERS = "clusters"  # judge, strictness and question prefix change the score
USES_SIMILARITY = "similarity"  # judge and question prefix change the score


@dataclass
class MeasureInputs:
    """What the measures of one question read; derived values are computed once."""

    record: QuestionGenerations
    judgement: Judgement

    @cached_property
    def sample_log_likelihoods(self) -> list[float]:  # (N,) mean token log-prob, EOS excluded
        return [m.sequence_log_likelihood(s.token_logprobs, s.ends_with_eos) for s in self.record.samples]

    @cached_property
    def cluster_log_probs(self):  # (K,)
        return m.cluster_log_probs(self.sample_log_likelihoods, self.judgement.sample_cluster_ids)


@dataclass(frozen=True)
class Measure:
    name: str  # default name; see score_name for the name a run writes
    needs: frozenset[str]
    uses: str  # USES_NOTHING, USES_CLUSTERS or USES_SIMILARITY
    compute: Callable[[MeasureInputs], float] = field(repr=False)
    description: str = ""


def _greedy(inputs: MeasureInputs):
    return inputs.record.greedy


MEASURES: tuple[Measure, ...] = (
    Measure(
        "semantic_entropy", frozenset({SAMPLE_TEXTS, SAMPLE_TOKEN_LOGPROBS}), USES_CLUSTERS,
        lambda x: m.entropy_from_log_probs(x.cluster_log_probs),
        "entropy of likelihood-weighted meaning clusters (Farquhar et al. 2024)",
    ),
    Measure(
        "discrete_semantic_entropy", frozenset({SAMPLE_TEXTS}), USES_CLUSTERS,
        lambda x: m.discrete_semantic_entropy(x.judgement.sample_cluster_ids),
        "entropy of the meaning clusters' sample frequencies",
    ),
    Measure(
        "naive_entropy", frozenset({SAMPLE_TOKEN_LOGPROBS}), USES_NOTHING,
        lambda x: m.naive_entropy(x.sample_log_likelihoods),
        "-mean of the samples' length-normalised log-likelihoods",
    ),
    Measure(
        "yes_no_entropy", frozenset({FIRST_TOKEN_YES_NO_MASS}), USES_NOTHING,
        lambda x: m.yes_no_entropy(*x.record.yes_no_mass),
        "binary entropy of the first token's renormalised yes/no mass",
    ),
    Measure(
        "greedy_neg_log_likelihood", frozenset({GREEDY_TOKEN_LOGPROBS}), USES_NOTHING,
        lambda x: m.greedy_neg_log_likelihood(_greedy(x).token_logprobs, _greedy(x).ends_with_eos),
        "-sum of the greedy answer's token log-probs, EOS excluded",
    ),
    Measure(
        "greedy_perplexity", frozenset({GREEDY_TOKEN_LOGPROBS}), USES_NOTHING,
        lambda x: m.greedy_perplexity(_greedy(x).token_logprobs, _greedy(x).ends_with_eos),
        "exp(-mean token log-prob) of the greedy answer, EOS excluded",
    ),
    Measure(
        "greedy_mean_token_entropy", frozenset({GREEDY_TOKEN_ENTROPIES}), USES_NOTHING,
        lambda x: m.greedy_mean_token_entropy(_greedy(x).token_entropies, _greedy(x).ends_with_eos),
        "mean next-token entropy over the greedy answer, EOS step excluded",
    ),
    Measure(
        "num_semantic_sets", frozenset({SAMPLE_TEXTS}), USES_CLUSTERS,
        lambda x: m.num_semantic_sets(x.judgement.sample_cluster_ids),
        "number of meaning clusters (Lin et al. 2023)",
    ),
    Measure(
        "eigval_laplacian", frozenset({SAMPLE_TEXTS}), USES_SIMILARITY,
        lambda x: m.eigval_laplacian(x.judgement.similarity),
        "sum of max(0, 1 - eigenvalue) of the normalised graph Laplacian (Lin et al. 2023)",
    ),
    Measure(
        "degree_matrix", frozenset({SAMPLE_TEXTS}), USES_SIMILARITY,
        lambda x: m.degree_matrix(x.judgement.similarity),
        "trace(mI - D) / m^2 of the similarity graph (Lin et al. 2023)",
    ),
    Measure(
        "eccentricity", frozenset({SAMPLE_TEXTS}), USES_SIMILARITY,
        lambda x: m.eccentricity(x.judgement.similarity),
        "spread of the spectral embeddings, eigenvalues < 0.9 (Lin et al. 2023)",
    ),
    Measure(
        "lexical_similarity_rougeL", frozenset({SAMPLE_TEXTS}), USES_NOTHING,
        lambda x: m.lexical_similarity_rouge_l(x.record.sample_texts),
        "1 - mean pairwise ROUGE-L F of the samples",
    ),
    Measure(
        "p_true", frozenset({P_TRUE}), USES_NOTHING,
        lambda x: m.p_true_uncertainty(x.record.p_true),
        "1 - P(True) from a separate pass (field p_true of the generations record)",
    ),
)



# --------------------------------------------------------------------------------------------
# Vision-aware measures (docs/method.md): they need stage 1's --image-variants or the probes pass,
# and older generations files skip them with a message. Each reads the change of the yes/no
# distribution in the direction of the greedy answer, parsed as eval_pope parses it.

# mean/blur/noise: stage 1 --image-variants; mask_*: semantic_entropy.vision_probes.
CONTRASTED_VARIANTS = ("mean", "blur", "noise", "mask_attended", "mask_random")
MILD_PERTURBATIONS = ("blur", "noise")  # pooled with the real image by perturbation_yes_no_entropy
REWORDINGS = ("contain", "see")  # semantic_entropy.vision_probes.REWORDINGS


def _variant_mass(inputs: MeasureInputs, variant: str) -> tuple[float, float]:
    return inputs.record.image_variant_masses[variant]


def _rewording_mass(inputs: MeasureInputs, rewording: str) -> tuple[float, float]:
    return inputs.record.question_variant_masses[rewording]


def _answer(inputs: MeasureInputs) -> str:
    """The greedy answer's direction, "yes" or "no", as POPE's evaluation reads it."""
    return parse_yes_no(inputs.record.greedy.text)


def _needs_variants(*variants: str, rewordings: Sequence[str] = ()) -> frozenset[str]:
    return frozenset({FIRST_TOKEN_YES_NO_MASS, GREEDY_TEXT, *(image_variant_field(v) for v in variants),
                      *(question_variant_field(r) for r in rewordings)})


def vision_aware_measures() -> tuple[Measure, ...]:
    """visual_contrast_V, image_independence_V, contrastive_yes_no_entropy_V for V in
    CONTRASTED_VARIANTS, and perturbation_yes_no_entropy pooled over images, wordings or both."""
    measures = []
    for v in CONTRASTED_VARIANTS:
        measures += [
            Measure(
                f"visual_contrast_{v}", _needs_variants(v), USES_NOTHING,
                lambda x, v=v: m.visual_contrast(x.record.yes_no_mass, _variant_mass(x, v), _answer(x)),
                f"H(p) + ln2 - S(p, q): yes/no entropy plus image-independence of the answer vs the {v} image "
                f"(S = JS signed by the answer's direction)",
            ),
            Measure(
                f"image_independence_{v}", _needs_variants(v), USES_NOTHING,
                lambda x, v=v: m.image_independence(x.record.yes_no_mass, _variant_mass(x, v), _answer(x)),
                f"1 - S(p, q)/ln2 vs the {v} image: above 1 when the {v} image makes the answer surer "
                f"(visual_contrast_{v} without H(p))",
            ),
            Measure(
                f"contrastive_yes_no_entropy_{v}", _needs_variants(v), USES_NOTHING,
                lambda x, v=v: m.contrastive_yes_no_entropy(x.record.yes_no_mass, _variant_mass(x, v), _answer(x)),
                f"doubt of the answer under the VCD-contrasted yes/no distribution p^2/q, q with the {v} image",
            ),
        ]
    measures.append(Measure(
        "perturbation_yes_no_entropy", _needs_variants(*MILD_PERTURBATIONS), USES_NOTHING,
        lambda x: m.perturbation_yes_no_entropy(
            [x.record.yes_no_mass, *(_variant_mass(x, v) for v in MILD_PERTURBATIONS)], _answer(x)),
        "doubt of the answer under the mean yes/no distribution over the real, blurred and noisy images",
    ))
    measures.append(Measure(
        "wording_perturbation_yes_no_entropy", _needs_variants(rewordings=REWORDINGS), USES_NOTHING,
        lambda x: m.perturbation_yes_no_entropy(
            [x.record.yes_no_mass, *(_rewording_mass(x, r) for r in REWORDINGS)], _answer(x)),
        "doubt of the answer under the mean yes/no distribution over the question and its rewordings",
    ))
    measures.append(Measure(
        "image_and_wording_perturbation_yes_no_entropy",
        _needs_variants(*MILD_PERTURBATIONS, rewordings=REWORDINGS), USES_NOTHING,
        lambda x: m.perturbation_yes_no_entropy(
            [x.record.yes_no_mass, *(_variant_mass(x, v) for v in MILD_PERTURBATIONS),
             *(_rewording_mass(x, r) for r in REWORDINGS)], _answer(x)),
        "doubt of the answer under the mean yes/no distribution over the real, blurred and noisy images "
        "and the rewordings",
    ))
    return tuple(measures)


MEASURES = MEASURES + vision_aware_measures()


# --------------------------------------------------------------------------------------------
# The published vision-aware detectors (semantic_entropy.baseline_probes; docs/baselines.md
# gives each one's source, formula and settings). Their math lives in semantic_entropy.probes.


def _baselines(inputs: MeasureInputs):
    return inputs.record.baseline_probes


def baseline_measures() -> tuple[Measure, ...]:
    """VAUQ (and its no-image variant), SVAR, GLSim, VL-Uncertainty (sampled, expected, and the
    blur-only ablation), the no-image prior's entropy and the Post-Hoc-Debias entropy against it."""
    from semantic_entropy.probes import attention_ratio, glsim, no_image_prior, vauq, vl_uncertainty
    from semantic_entropy.sampling.generations_io import (ANSWER_IMAGE_ATTENTION, GLSIM_SIMILARITIES,
                                                          NO_IMAGE_YES_NO_MASS, VAUQ_ENTROPIES, VL_BLUR_ONLY_PAIRS,
                                                          VL_UNCERTAINTY_PAIRS)

    return (
        Measure(
            "vauq", frozenset({VAUQ_ENTROPIES}), USES_NOTHING,
            lambda x: vauq.vauq_score(_baselines(x).vauq_entropies, _baselines(x).vauq_masked_entropies,
                                      _baselines(x).vauq_alpha),
            "VAUQ: H - alpha (H_masked - H), answer-step entropies (bits), most attended image tokens hidden",
        ),
        Measure(
            "vauq_no_image", frozenset({VAUQ_ENTROPIES}), USES_NOTHING,
            lambda x: vauq.vauq_score(_baselines(x).vauq_entropies, _baselines(x).vauq_no_image_entropies,
                                      vauq.NO_IMAGE_ALPHA),
            "VAUQ with every image token removed (alpha 0.6)",
        ),
        Measure(
            "attention_ratio_svar", frozenset({ANSWER_IMAGE_ATTENTION}), USES_NOTHING,
            lambda x: attention_ratio.attention_ratio_uncertainty(_baselines(x).layer_image_shares,
                                                                  _baselines(x).svar_layers),
            "-SVAR: minus the first answer token's head-mean image attention summed over the middle layers",
        ),
        Measure(
            "glsim", frozenset({GLSIM_SIMILARITIES}), USES_NOTHING,
            lambda x: -glsim.glsim_score(*_baselines(x).glsim_similarities),
            "-GLSim: minus 0.6 global + 0.4 top-32 local similarity of the asked object with the image",
        ),
        Measure(
            "vl_uncertainty", frozenset({VL_UNCERTAINTY_PAIRS}), USES_NOTHING,
            lambda x: vl_uncertainty.discrete_entropy_bits(_baselines(x).vl_answers),
            "entropy (bits) of the answers drawn for 5 blurred-image x rephrased-question pairs",
        ),
        Measure(
            "vl_uncertainty_expected", frozenset({VL_UNCERTAINTY_PAIRS}), USES_NOTHING,
            lambda x: vl_uncertainty.expected_discrete_entropy_bits(_baselines(x).vl_cluster_masses),
            "vl_uncertainty's expectation over the draws (exact, no sampling noise)",
        ),
        Measure(
            "vl_uncertainty_blur_only_expected", frozenset({VL_BLUR_ONLY_PAIRS}), USES_NOTHING,
            lambda x: vl_uncertainty.expected_discrete_entropy_bits(_baselines(x).vl_image_only_masses),
            "ablation: vl_uncertainty_expected with the question unreworded (the blurred images alone)",
        ),
        Measure(
            "no_image_prior_entropy", frozenset({NO_IMAGE_YES_NO_MASS}), USES_NOTHING,
            lambda x: m.yes_no_entropy(*_baselines(x).no_image_mass),
            "yes/no entropy of the first token with the image removed (the language prior)",
        ),
        Measure(
            "no_image_calibrated_entropy", frozenset({NO_IMAGE_YES_NO_MASS, FIRST_TOKEN_YES_NO_MASS}), USES_NOTHING,
            lambda x: no_image_prior.calibrated_entropy(x.record.yes_no_mass, _baselines(x).no_image_mass),
            "entropy of the yes/no distribution calibrated against the no-image prior (Post-Hoc Debias)",
        ),
    )


MEASURES = MEASURES + baseline_measures()


# --------------------------------------------------------------------------------------------
# Method v2 (semantic_entropy.method_probes; docs/method.md "Method v2"): the answer read against
# evidence outside its own first-token distribution. Settings: scoring/method_settings.py.


def grounding_evidence(inputs: MeasureInputs) -> float:
    """e: the calibrated evidence that the asked object is in the image (the settings' statistic,
    layer, top-k mean and logistic calibration)."""
    from semantic_entropy.probes import answer_grounding as g
    from semantic_entropy.scoring.method_settings import TOP_FIELD, method_settings

    chosen = method_settings()["grounding"]
    tops = getattr(inputs.record.method_probes, TOP_FIELD[chosen["statistic"]])
    if chosen["layer"] not in tops:
        raise ValueError(f"{inputs.record.where()}: method_probes has no grounding at layer {chosen['layer']} "
                         f"(has {sorted(tops)}); rerun semantic_entropy.method_probes with --grounding-layers")
    return g.calibrated_evidence(g.top_k_mean(tops[chosen["layer"]], chosen["top_k"]), chosen["slope"],
                                 chosen["intercept"])


def _erased_mass(inputs: MeasureInputs) -> tuple[float, float]:
    from semantic_entropy.scoring.method_settings import method_settings

    fraction = method_settings()["counterfactual"]["erase_fraction"]
    erased = inputs.record.method_probes.erased_masses
    if fraction not in erased:
        raise ValueError(f"{inputs.record.where()}: method_probes has no erased share {fraction} (has {sorted(erased)})")
    return erased[fraction]


def method_v2_measures() -> tuple[Measure, ...]:
    """(a) grounding_disagreement and its term alone, (b) counterfactual_disagreement and its
    term alone, (c) prior_vauq, and p_no, the feature of the p(yes)-only control."""
    from semantic_entropy.probes import answer_grounding as g
    from semantic_entropy.sampling.generations_io import (ANSWER_COUNTERFACTUALS, NO_IMAGE_YES_NO_MASS,
                                                          OBJECT_GROUNDING, VAUQ_ENTROPIES)
    from semantic_entropy.scoring.method_settings import method_settings

    answer_mass = frozenset({FIRST_TOKEN_YES_NO_MASS, GREEDY_TEXT})
    return (
        Measure(
            "grounding_disagreement", answer_mass | {OBJECT_GROUNDING}, USES_NOTHING,
            lambda x: g.grounding_disagreement(x.record.yes_no_mass, _answer(x), grounding_evidence(x)),
            "(a) H(p) + ln2 ([yes](1 - e) + [no] e), e the calibrated grounding of the asked object",
        ),
        Measure(
            "grounding_disagreement_term", frozenset({GREEDY_TEXT, OBJECT_GROUNDING}), USES_NOTHING,
            lambda x: (1.0 - grounding_evidence(x)) if _answer(x) == "yes" else grounding_evidence(x),
            "ablation: [yes](1 - e) + [no] e alone (grounding_disagreement without H(p))",
        ),
        Measure(
            "counterfactual_disagreement", answer_mass | {ANSWER_COUNTERFACTUALS}, USES_NOTHING,
            lambda x: g.counterfactual_disagreement(x.record.yes_no_mass, _answer(x), _erased_mass(x),
                                                    x.record.method_probes.crop_masses,
                                                    method_settings()["counterfactual"]["weight"]),
            "(b) H(p) + w ln2 c: c = p(yes) with the object's attended region erased (yes), max p(yes) over crops (no)",
        ),
        Measure(
            "counterfactual_term", frozenset({GREEDY_TEXT, ANSWER_COUNTERFACTUALS}), USES_NOTHING,
            lambda x: g.counterfactual_yes(_answer(x), _erased_mass(x), x.record.method_probes.crop_masses),
            "ablation: c alone (counterfactual_disagreement without H(p))",
        ),
        Measure(
            "prior_vauq", frozenset({GREEDY_TEXT, VAUQ_ENTROPIES, NO_IMAGE_YES_NO_MASS}), USES_NOTHING,
            lambda x: g.prior_vauq(_baselines(x).vauq_entropies, _baselines(x).vauq_masked_entropies,
                                   _baselines(x).no_image_mass, _answer(x), method_settings()["prior_vauq"]["alpha"],
                                   method_settings()["prior_vauq"]["beta"]),
            "(c) H - alpha (H_mask - H) + beta pi_a (bits): VAUQ plus the no-image prior's probability of the answer",
        ),
        Measure(
            "p_no", frozenset({FIRST_TOKEN_YES_NO_MASS}), USES_NOTHING,
            lambda x: 1.0 - g.p_yes(x.record.yes_no_mass),
            "1 - p(yes): not a detector by itself; the feature of the p(yes)-only control (fitted_combination --by-answer)",
        ),
    )


MEASURES = MEASURES + method_v2_measures()

MEASURES_BY_NAME = {measure.name: measure for measure in MEASURES}


def select_measures(names: Sequence[str] | None, judge=None) -> list[Measure]:
    """The measures named (all when None), in registry order; an unknown name is an error.

    `polygraph:NAME` names follow ours, in the order given (see `polygraph_measures`); `judge`
    gives them their semantic statistics.

    >>> [x.name for x in select_measures(["naive_entropy", "semantic_entropy"])]
    ['semantic_entropy', 'naive_entropy']
    """
    if names is None:
        return list(MEASURES)
    unknown = [name for name in names if name not in MEASURES_BY_NAME and not is_polygraph_name(name)]
    if unknown:
        raise ValueError(f"unknown measure(s) {unknown}; known: {list(MEASURES_BY_NAME)} and polygraph:NAME")
    wanted = set(names)
    ours = [measure for measure in MEASURES if measure.name in wanted]
    return ours + polygraph_measures([name for name in dict.fromkeys(names) if is_polygraph_name(name)], judge)


def score_name(measure: Measure, judge_name: str, strict: bool, question_prefix: bool | None) -> str:
    """The name a run writes for `measure` under these judge settings.

    >>> se = MEASURES_BY_NAME["semantic_entropy"]
    >>> score_name(se, "exact", strict=True, question_prefix=None)
    'semantic_entropy'
    >>> score_name(se, "nli", strict=False, question_prefix=False)
    'semantic_entropy_nli_nonstrict_noquestion'
    >>> score_name(MEASURES_BY_NAME["eccentricity"], "llm", strict=True, question_prefix=None)
    'eccentricity_llm'
    >>> score_name(MEASURES_BY_NAME["naive_entropy"], "nli", strict=False, question_prefix=False)
    'naive_entropy'
    """
    if measure.uses == USES_NOTHING or judge_name == "exact":
        return measure.name
    parts = [measure.name, judge_name]
    if measure.uses == USES_CLUSTERS:
        parts.append("strict" if strict else "nonstrict")
    if question_prefix is False:
        parts.append("noquestion")
    return "_".join(parts)


def missing_fields(measure: Measure, available: frozenset[str]) -> list[str]:
    return sorted(measure.needs - available)


# --------------------------------------------------------------------------------------------
# Hook for LM-Polygraph's estimators (optional extra `polygraph`; see semantic_entropy.polygraph.measures)

POLYGRAPH_PREFIX = "polygraph:"


def is_polygraph_name(name: str) -> bool:
    """Whether a measure name asks for an LM-Polygraph estimator.

    >>> is_polygraph_name("polygraph:SemanticEntropy"), is_polygraph_name("semantic_entropy")
    (True, False)
    """
    return name.startswith(POLYGRAPH_PREFIX)


def polygraph_measures(names: Sequence[str], judge=None) -> list[Measure]:
    """LM-Polygraph estimators as measures; lm_polygraph is imported only when names are given."""
    if not names:
        return []
    from semantic_entropy.polygraph.measures import polygraph_measure  # imports registry: import here

    measures = [polygraph_measure(name, judge) for name in names]
    return list({measure.name: measure for measure in reversed(measures)}.values())[::-1]  # first of each name
