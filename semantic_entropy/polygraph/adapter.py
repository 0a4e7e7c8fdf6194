"""Our generations and judge verdicts as LM-Polygraph statistics, in LM-Polygraph's conventions.

Pure functions (numpy only): this module does not import lm_polygraph, so the core package can
use and test it without the `polygraph` extra. `semantic_entropy.polygraph.measures` feeds
these statistics to the library's own estimators.

One question is one batch item (B = 1); `stack_statistics` joins several. The statistics and
their conventions, as LM-Polygraph 0.7.0's stat calculators define them (`GreedyProbsCalculator`,
`EntropyCalculator`, `SamplingGenerationCalculator`, `SemanticMatrixCalculator`,
`SemanticClassesCalculator`), next to ours (docs/design.md):

| statistic | per item | LM-Polygraph convention | ours |
|---|---|---|---|
| `greedy_texts` | str | the greedy answer | same (stripped) |
| `greedy_log_likelihoods` | (T,) | token log-probs, EOS INCLUDED | EOS excluded |
| `greedy_tokens` | (T,) | token ids, EOS included | (ids are not kept by the parsed records: `UNKNOWN_TOKEN_ID`) |
| `entropy` | (T,) | next-token entropy at each step, EOS step included | EOS step excluded |
| `sample_texts` | (N',) | samples with at least one token before EOS | all N samples |
| `sample_log_probs` | (N',) | SUM of token log-probs INCLUDING EOS | MEAN, EOS excluded |
| `sample_log_likelihoods` | (N', T_i) | token log-probs, EOS excluded | |
| `sample_tokens` | (N', T_i) | token ids, EOS excluded (`UNKNOWN_TOKEN_ID`) | |
| `semantic_matrix_entail` | (N', N') | P(entailment \\| i => j), NLI on bare answers | the judge's input (question prefix by default) |
| `semantic_matrix_contra` | (N', N') | P(contradiction \\| i => j) | |
| `semantic_matrix_classes` | (N', N') | argmax label id (`entailment_id` = entailment) | |
| `semantic_matrix_{entail,contra}_logits` | (N', N') | NLI logits | log-probabilities (see below) |
| `semantic_classes_entail` | dict | first-representative clusters, both directions entailment | same rule when strict |
| `p_true` | float | log P(True) | P(True) |

Answers that are only EOS (no token before it) are DROPPED from the sample statistics, as
LM-Polygraph's sampler drops them ("No tokens were generated for sample i"); we keep them and
score them by their EOS log-prob. `N'` is the number of samples kept.

Full next-token distributions (`greedy_log_probs`, (T, V)) are not stored in our generations,
so estimators that read them (RenyiNeg, FisherRao, SelfCertainty, ...) cannot run; the
per-step entropies they would give (`entropy`) are stored and supplied directly.

Judge verdicts as label probabilities (N, N, 3) in `judges.LABELS` order (contradiction,
neutral, entailment, the column order of LM-Polygraph's default DeBERTa-MNLI too):

- a pairwise judge (NLI, LLM): its label probabilities for each ordered pair of distinct texts
  (cached, so the pairs already judged for the clusters cost nothing); identical texts
  (the diagonal included) count as certain entailment, as our judges treat them;
- any other judge (exact): one-hot from its clusters: entailment within a cluster,
  contradiction across clusters.

"Logits" are the log label-probabilities (floored at the smallest positive float): a softmax
over any subset of labels, e.g. LUQ's entailment-vs-contradiction
exp(e) / (exp(e) + exp(c)) = p_e / (p_e + p_c), equals the one of the model's logits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from semantic_entropy.sampling.generations_io import Answer, QuestionGenerations
from semantic_entropy.scoring.judges import CONTRADICTION, ENTAILMENT, LABELS, Judge, PairwiseJudge

UNKNOWN_TOKEN_ID = -1  # token ids are not kept by the parsed records; only their count is used
SMALLEST_PROBABILITY = np.finfo(np.float64).tiny  # floor before taking logs


# --------------------------------------------------------------------------------------------
# Per-answer conventions


def answer_tokens_before_eos(answer: Answer) -> int:
    """Number of the answer's tokens before its EOS (all of them when it has none).

    >>> answer_tokens_before_eos(Answer("Yes", (-0.1, -0.2), None, True))
    1
    >>> answer_tokens_before_eos(Answer("Yes no", (-0.1, -0.2), None, False))
    2
    """
    _require_logprobs(answer)
    return len(answer.token_logprobs) - int(bool(answer.ends_with_eos))


def polygraph_sequence_log_prob(answer: Answer) -> float:
    """LM-Polygraph's `sample_log_probs` entry: SUM of token log-probs, EOS INCLUDED.

    >>> polygraph_sequence_log_prob(Answer("Yes", (-0.25, -0.5), None, True))
    -0.75
    """
    _require_logprobs(answer)
    return math.fsum(answer.token_logprobs)


def polygraph_token_log_likelihoods(answer: Answer) -> list[float]:
    """LM-Polygraph's `sample_log_likelihoods` entry: token log-probs, EOS EXCLUDED.

    >>> polygraph_token_log_likelihoods(Answer("Yes", (-0.25, -0.5), None, True))
    [-0.25]
    """
    return list(answer.token_logprobs[: answer_tokens_before_eos(answer)])


def kept_sample_indices(samples: Sequence[Answer]) -> list[int]:
    """Indices of the samples LM-Polygraph keeps: those with a token before EOS.

    >>> kept_sample_indices([Answer("Yes", (-0.1, -0.2), None, True), Answer("", (-3.0,), None, True)])
    [0]
    """
    return [i for i, answer in enumerate(samples) if answer_tokens_before_eos(answer) > 0]


def _require_logprobs(answer: Answer) -> None:
    if answer.token_logprobs is None:
        raise ValueError("the answer has no token_logprobs")


# --------------------------------------------------------------------------------------------
# Greedy and sample statistics (B = 1)


def greedy_statistics(greedy: Answer) -> dict:
    """`greedy_texts`, `greedy_log_likelihoods`, `greedy_tokens` and, with entropies, `entropy`.

    >>> stats = greedy_statistics(Answer("Yes", (-0.25, -0.5), (0.6, 0.2), True))
    >>> stats["greedy_log_likelihoods"], stats["entropy"], stats["greedy_tokens"]
    ([[-0.25, -0.5]], [[0.6, 0.2]], [[-1, -1]])
    """
    _require_logprobs(greedy)
    stats = {
        "greedy_texts": [greedy.text],
        "greedy_log_likelihoods": [list(greedy.token_logprobs)],  # (1, T), EOS included
        "greedy_tokens": [[UNKNOWN_TOKEN_ID] * len(greedy.token_logprobs)],  # (1, T), EOS included
    }
    if greedy.token_entropies is not None:
        stats["entropy"] = [list(greedy.token_entropies)]  # (1, T), EOS step included
    return stats


def sample_text_statistics(texts: Sequence[str]) -> dict:
    return {"sample_texts": [list(texts)]}  # (1, N')


def sample_logprob_statistics(samples: Sequence[Answer]) -> dict:
    """`sample_log_probs`, `sample_log_likelihoods` and `sample_tokens` of the kept samples.

    >>> stats = sample_logprob_statistics([Answer("Yes", (-0.25, -0.5), None, True)])
    >>> stats["sample_log_probs"], stats["sample_log_likelihoods"], stats["sample_tokens"]
    ([[-0.75]], [[[-0.25]]], [[[-1]]])
    """
    return {
        "sample_log_probs": [[polygraph_sequence_log_prob(s) for s in samples]],  # (1, N')
        "sample_log_likelihoods": [[polygraph_token_log_likelihoods(s) for s in samples]],  # (1, N', T_i)
        "sample_tokens": [[[UNKNOWN_TOKEN_ID] * answer_tokens_before_eos(s) for s in samples]],  # (1, N', T_i)
    }


def p_true_statistics(p_true: float) -> dict:
    """`p_true` as LM-Polygraph stores it: log P(True) (floored at the smallest positive float).

    >>> p_true_statistics(1.0)
    {'p_true': [0.0]}
    """
    return {"p_true": [math.log(max(p_true, SMALLEST_PROBABILITY))]}


# --------------------------------------------------------------------------------------------
# Judge verdicts


def one_hot_label_probs_from_clusters(cluster_ids: Sequence[int]) -> np.ndarray:
    """(N, N, 3): entailment within a cluster, contradiction across clusters.

    >>> one_hot_label_probs_from_clusters([0, 1])[:, :, 2].tolist()  # entailment column
    [[1.0, 0.0], [0.0, 1.0]]
    """
    ids = np.asarray(cluster_ids)
    same = ids[:, None] == ids[None, :]  # (N, N)
    probs = np.zeros((len(ids), len(ids), len(LABELS)))
    probs[same, ENTAILMENT] = 1.0
    probs[~same, CONTRADICTION] = 1.0
    return probs


def judge_label_probs(judge: Judge, question: str, texts: Sequence[str]) -> np.ndarray:
    """(N, N, 3) label probabilities of 'texts[i] entails texts[j]' in `LABELS` order.

    Pairwise judges: the model's probabilities (identical texts: certain entailment); other
    judges: one-hot from their clusters (see the module docstring).
    """
    n = len(texts)
    if not isinstance(judge, PairwiseJudge):
        judgement = judge.judge(question, list(texts))
        return one_hot_label_probs_from_clusters(judgement.sample_cluster_ids)
    unique = list(dict.fromkeys(texts))
    pairs = [(a, b) for a in unique for b in unique if a != b]
    probs_of_pair = dict(zip(pairs, judge.label_probs(question, pairs))) if pairs else {}
    certain_entailment = np.eye(len(LABELS))[ENTAILMENT]
    probs = np.empty((n, n, len(LABELS)))
    for i, a in enumerate(texts):
        for j, b in enumerate(texts):
            probs[i, j] = certain_entailment if a == b else probs_of_pair[a, b]
    return probs


def first_representative_classes(is_entailment: np.ndarray) -> list[int]:
    """Class of each sample: the first class whose first member entails it both ways, else new.

    The rule of LM-Polygraph's `SemanticClassesCalculator` (and of our strict clustering).

    >>> first_representative_classes(np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=bool))
    [0, 0, 1]
    """
    representatives: list[int] = []
    classes = []
    for i in range(len(is_entailment)):
        for class_id, first in enumerate(representatives):
            if is_entailment[first, i] and is_entailment[i, first]:
                classes.append(class_id)
                break
        else:
            representatives.append(i)
            classes.append(len(representatives) - 1)
    return classes


def semantic_classes_statistic(classes: Sequence[int], batch_index: int = 0) -> dict:
    """`semantic_classes_entail` in LM-Polygraph's layout for one batch item.

    >>> semantic_classes_statistic([0, 1, 0])
    {'sample_to_class': {0: {0: 0, 1: 1, 2: 0}}, 'class_to_sample': {0: [[0, 2], [1]]}}
    """
    class_to_sample = [[] for _ in range(max(classes, default=-1) + 1)]
    for sample, class_id in enumerate(classes):
        class_to_sample[class_id].append(sample)
    return {
        "sample_to_class": {batch_index: {sample: c for sample, c in enumerate(classes)}},
        "class_to_sample": {batch_index: class_to_sample},
    }


def semantic_statistics(label_probs: np.ndarray) -> dict:
    """The semantic-matrix statistics and classes of one question from (N, N, 3) label probs."""
    label_probs = np.asarray(label_probs, dtype=np.float64)
    n = label_probs.shape[0]
    if label_probs.shape != (n, n, len(LABELS)):
        raise ValueError(f"label probabilities must have shape (N, N, {len(LABELS)}), got {label_probs.shape}")
    entail = label_probs[:, :, ENTAILMENT]  # (N, N)
    contra = label_probs[:, :, CONTRADICTION]  # (N, N)
    classes = label_probs.argmax(axis=-1)  # (N, N)
    return {
        "semantic_matrix_entail": entail[None],  # (1, N, N)
        "semantic_matrix_contra": contra[None],
        "semantic_matrix_entail_logits": np.log(np.maximum(entail, SMALLEST_PROBABILITY))[None],
        "semantic_matrix_contra_logits": np.log(np.maximum(contra, SMALLEST_PROBABILITY))[None],
        "semantic_matrix_classes": classes[None],
        "entailment_id": ENTAILMENT,
        "semantic_classes_entail": semantic_classes_statistic(first_representative_classes(classes == ENTAILMENT)),
    }


# --------------------------------------------------------------------------------------------
# One question, several questions

SEMANTIC_STATISTICS = frozenset({
    "semantic_matrix_entail", "semantic_matrix_contra", "semantic_matrix_entail_logits",
    "semantic_matrix_contra_logits", "semantic_matrix_classes", "entailment_id", "semantic_classes_entail",
})  # fmt: skip


def polygraph_statistics(record: QuestionGenerations, judge: Judge | None = None) -> dict:
    """Every LM-Polygraph statistic the record provides, for one batch item.

    The sample statistics cover the kept samples (`kept_sample_indices`); when the record has no
    token log-probs, every sample is kept (its text is all there is); when no sample is kept,
    the sample and semantic statistics are left out. The semantic statistics need a judge; they
    are judged on the kept samples' texts.
    """
    stats: dict = {}
    if record.greedy is not None:
        has_logprobs = record.greedy.token_logprobs is not None
        stats.update(greedy_statistics(record.greedy) if has_logprobs else {"greedy_texts": [record.greedy.text]})
    with_logprobs = all(s.token_logprobs is not None for s in record.samples)
    samples = [record.samples[i] for i in kept_sample_indices(record.samples)] if with_logprobs else record.samples
    if not samples:
        return stats
    stats.update(sample_text_statistics([s.text for s in samples]))
    if with_logprobs:
        stats.update(sample_logprob_statistics(samples))
    if record.p_true is not None:
        stats.update(p_true_statistics(record.p_true))
    if judge is not None:
        stats.update(semantic_statistics(judge_label_probs(judge, record.question, [s.text for s in samples])))
    return stats


def stack_statistics(items: Sequence[dict]) -> dict:
    """Join single-item statistics into one batch (the statistics all items have).

    Per-item lists are concatenated; (1, N, N) matrices are stacked, so they need one N for the
    whole batch (LM-Polygraph's own calculator has the same limit); the semantic classes are
    re-indexed by batch position.
    """
    if not items:
        raise ValueError("no items to stack")
    common = set(items[0]).intersection(*items[1:])
    batch: dict = {}
    for key in sorted(common):
        values = [item[key] for item in items]
        if key == "entailment_id":
            batch[key] = values[0]
        elif key == "semantic_classes_entail":
            batch[key] = {
                part: {b: value[part][0] for b, value in enumerate(values)}
                for part in ("sample_to_class", "class_to_sample")
            }
        elif key.startswith("semantic_matrix"):
            shapes = {value.shape for value in values}
            if len(shapes) > 1:
                raise ValueError(f"{key}: questions of one batch kept different numbers of samples {sorted(shapes)}; "
                                 "use batches of one question")
            batch[key] = np.concatenate(values, axis=0)  # (B, N, N)
        else:
            batch[key] = [x for value in values for x in value]
    return batch
