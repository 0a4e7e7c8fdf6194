"""`--measures polygraph:NAME`: LM-Polygraph's own estimators, computed by the library on our answers.

Needs the optional extra: `pip install -e '.[polygraph]'` (lm-polygraph 0.7.0); lm_polygraph is
imported only when such a measure is built. Each question is one LM-Polygraph batch of one
item; its statistics come from `semantic_entropy.polygraph.adapter` in LM-Polygraph's
conventions (sums of token log-probs with EOS, samples that are only EOS dropped, ...), and
the estimator is built by LM-Polygraph's `FactoryEstimator`.

Names: `polygraph:CLASS` or `polygraph:CLASS:key=value,key=value` with the estimator's own
constructor arguments (values as JSON, else strings), e.g. `polygraph:SemanticEntropy`,
`polygraph:SemanticEntropy:entropy_estimation=direct`, `polygraph:EigValLaplacian:affinity=contra`.

Score names: `polygraph_` + LM-Polygraph's own name of the estimator (`str(estimator)`, which
carries its parameters: `polygraph_SemanticEntropy`, `polygraph_LexicalSimilarity_rougeL`,
`polygraph_EigValLaplacian_NLI_score_entail`), then the judge's tags as for our measures: an
estimator that reads the semantic matrices or classes is judge-dependent (judge and question
prefix change it; strictness does not: LM-Polygraph's classes are always strict), e.g.
`polygraph_SemanticEntropy_nli_noquestion`.

Wired estimators, their conventions next to ours (docs/design.md), and their signs. LM-Polygraph's
base class asks for "higher = more uncertain", and every estimator wired here follows it, but
several are not on our scale:

| estimator | LM-Polygraph computes | our closest measure |
|---|---|---|
| MaximumSequenceProbability | -sum log p, EOS included | greedy_neg_log_likelihood (EOS excluded) |
| Perplexity | -mean log p, EOS included: the LOG of a perplexity | greedy_perplexity = exp(-mean), EOS excluded |
| MeanTokenEntropy | mean step entropy, EOS step included | greedy_mean_token_entropy (EOS step excluded) |
| MonteCarloSequenceEntropy | -mean_i sum_t log p, EOS included | naive_entropy uses the mean over tokens, EOS excluded |
| MonteCarloNormalizedSequenceEntropy | -mean_i (sum_t log p with EOS) / (tokens without EOS) | naive_entropy (EOS excluded from both) |
| SemanticEntropy | -mean_i log sum_{j in class(i)} p_j, p_j = sum with EOS, classes NOT normalised | semantic_entropy (normalised, mean log-prob without EOS, -sum_c p_c log p_c) |
| SemanticEntropy:class_probability_estimation=frequency | -mean_i log(n_class(i) / N) | discrete_semantic_entropy: EQUAL |
| NumSemSets | connected components of "entail > contra both ways" | num_semantic_sets: EQUAL when the judge's relation is transitive (exact judge) |
| EigValLaplacian, DegMat, Eccentricity | on W = (E + E^T) / 2 | eigval_laplacian, degree_matrix, eccentricity: EQUAL (same W) |
| LexicalSimilarity (rougeL) | -mean pairwise ROUGE-L F, Porter stemming: values in [-1, 0] | lexical_similarity_rougeL = 1 - mean F, no stemming |
| KernelLanguageEntropy | von Neumann entropy of a heat kernel on entail + neutral/2 | none |
| LUQ | 1 - mean off-diagonal p_e / (p_e + p_c) | none |
| LabelProb | 1 - largest class / N | none |
| PTrue | -log P(True) | p_true = 1 - P(True) (same order) |

"EQUAL" assumes no sample was dropped for being only EOS (LM-Polygraph sees the others only).

Off our scale, still higher = more uncertain: LexicalSimilarity is a negated similarity (values
in [-1, 0]); SemanticEntropy goes NEGATIVE when samples repeat (N equal answers of probability p
give -log(N p), as the class masses are not normalised); Perplexity and PTrue are logs.

Docstrings in LM-Polygraph 0.7.0 that read the other way: DegMat says lower values mean greater
uncertainty and Eccentricity that a lower norm means greater uncertainty; the values they return
are 1 - mean similarity and the spread of the answers' embeddings, which grow with disagreement
(0 when all answers agree), i.e. higher = more uncertain, as tested. Eccentricity's per-answer
confidences (its second output, not used here) are negative norms: confidence, not uncertainty.

Our NLI judge shows `question + ' ' + answer` by default; LM-Polygraph's own
SemanticMatrixCalculator shows bare answers to DeBERTa-large-MNLI: `--judge nli --judge-model
DEBERTA_MNLI_FOLDER --no-question-prefix` gives its convention (scores named `..._nli_noquestion`).

A question whose samples are all only EOS has no LM-Polygraph sample statistics: a sample-based
estimator then stops the run with a message naming the question (greedy-only ones still run).

Not wired, because our generations lack their inputs: SAR, TokenSAR, SentenceSAR (cross-encoder
similarities), RenyiNeg, FisherRao, SelfCertainty, SemanticDensity (full next-token
distributions), EigenScore (embeddings), CCP, attention- and claim-level estimators.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from semantic_entropy.sampling.generations_io import (
    GREEDY_TEXT,
    GREEDY_TOKEN_ENTROPIES,
    GREEDY_TOKEN_LOGPROBS,
    P_TRUE,
    SAMPLE_TEXTS,
    SAMPLE_TOKEN_LOGPROBS,
)
from semantic_entropy.scoring.judges import Judge
from semantic_entropy.polygraph.adapter import SEMANTIC_STATISTICS, polygraph_statistics
from semantic_entropy.scoring.registry import POLYGRAPH_PREFIX, USES_NOTHING, USES_SIMILARITY, Measure, MeasureInputs

SCORE_PREFIX = "polygraph_"
INSTALL_HINT = "pip install -e '.[polygraph]' (lm-polygraph 0.7.0)"

WIRED_ESTIMATORS = (
    "MaximumSequenceProbability",
    "Perplexity",
    "MeanTokenEntropy",
    "MonteCarloSequenceEntropy",
    "MonteCarloNormalizedSequenceEntropy",
    "SemanticEntropy",
    "LexicalSimilarity",
    "NumSemSets",
    "EigValLaplacian",
    "DegMat",
    "Eccentricity",
    "KernelLanguageEntropy",
    "LUQ",
    "LabelProb",
    "PTrue",
)

# The generations fields (registry `needs`) behind each LM-Polygraph statistic the adapter supplies.
FIELDS_OF_STATISTIC = {
    "greedy_texts": frozenset({GREEDY_TEXT}),
    "greedy_log_likelihoods": frozenset({GREEDY_TOKEN_LOGPROBS}),
    "greedy_tokens": frozenset({GREEDY_TOKEN_LOGPROBS}),
    "entropy": frozenset({GREEDY_TOKEN_LOGPROBS, GREEDY_TOKEN_ENTROPIES}),
    "sample_texts": frozenset({SAMPLE_TEXTS}),
    "sample_log_probs": frozenset({SAMPLE_TOKEN_LOGPROBS}),
    "sample_log_likelihoods": frozenset({SAMPLE_TOKEN_LOGPROBS}),
    "sample_tokens": frozenset({SAMPLE_TOKEN_LOGPROBS}),
    "p_true": frozenset({P_TRUE}),
    **{name: frozenset({SAMPLE_TEXTS}) for name in SEMANTIC_STATISTICS},
}


def parse_polygraph_name(name: str) -> tuple[str, dict]:
    """(estimator class, constructor arguments) of a `polygraph:CLASS[:key=value,...]` name.

    >>> parse_polygraph_name("polygraph:SemanticEntropy")
    ('SemanticEntropy', {})
    >>> parse_polygraph_name("polygraph:EigValLaplacian:affinity=contra,verbose=false")
    ('EigValLaplacian', {'affinity': 'contra', 'verbose': False})
    """
    if not name.startswith(POLYGRAPH_PREFIX):
        raise ValueError(f"{name!r} is not a polygraph:NAME measure")
    class_name, _, arguments = name[len(POLYGRAPH_PREFIX) :].partition(":")
    config = {}
    for item in filter(None, arguments.split(",")):
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise ValueError(f"{name!r}: expected key=value arguments after the class name, got {item!r}")
        try:
            config[key] = json.loads(value)
        except json.JSONDecodeError:
            config[key] = value
    return class_name, config


def build_estimator(class_name: str, config: dict):
    """The LM-Polygraph estimator, built by the library's own factory."""
    if class_name not in WIRED_ESTIMATORS:
        raise ValueError(f"polygraph:{class_name} is not wired (its inputs are not in our generations, or it is "
                         f"unknown); wired: {', '.join(WIRED_ESTIMATORS)}")
    try:
        from lm_polygraph.utils.factory_estimator import FactoryEstimator
    except ImportError as error:
        raise ValueError(f"polygraph:{class_name} needs LM-Polygraph: {INSTALL_HINT} ({error})") from error
    try:
        return FactoryEstimator()(class_name, dict(config))
    except (TypeError, ValueError) as error:
        raise ValueError(f"polygraph:{class_name}: bad arguments {config}: {error}") from error


def needed_fields(statistics: Sequence[str]) -> frozenset[str]:
    unknown = [s for s in statistics if s not in FIELDS_OF_STATISTIC]
    if unknown:
        raise ValueError(f"our generations cannot supply LM-Polygraph statistics {unknown}")
    return frozenset().union(*(FIELDS_OF_STATISTIC[s] for s in statistics))


def single_score(values) -> float:
    """The one value of a batch of one (LM-Polygraph returns arrays or lists)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.shape != (1,):
        raise ValueError(f"expected one score for one question, got {values.shape[0]}")
    return float(values[0])


def polygraph_measure(name: str, judge: Judge | None = None) -> Measure:
    """A registry `Measure` that runs an LM-Polygraph estimator on one question's statistics.

    `judge` gives the semantic statistics of judge-dependent estimators; it may be None while
    only the measure's name is needed (computing such a measure without a judge is an error).
    """
    class_name, config = parse_polygraph_name(name)
    estimator = build_estimator(class_name, config)
    statistics = list(estimator.stats_dependencies)
    uses_judge = any(s in SEMANTIC_STATISTICS for s in statistics)

    def compute(inputs: MeasureInputs) -> float:
        if uses_judge and judge is None:
            raise ValueError(f"{name} needs a judge for its semantic statistics")
        stats = polygraph_statistics(inputs.record, judge if uses_judge else None)
        missing = [s for s in statistics if s not in stats]
        if missing:  # the record has the fields (scoring checked): every sample was dropped
            raise ValueError(f"{name}: no {', '.join(missing)}: every sample is only EOS, and LM-Polygraph "
                             "drops such samples")
        return single_score(estimator({s: stats[s] for s in statistics}))

    return Measure(
        name=SCORE_PREFIX + str(estimator),
        needs=needed_fields(statistics),
        uses=USES_SIMILARITY if uses_judge else USES_NOTHING,
        compute=compute,
        description=f"LM-Polygraph {class_name}{config or ''}, computed by the library",
    )
