"""Score one question: judge its answers, run the measures it has inputs for, build its record.

The output record (one line of uncertainty.jsonl; docs/design.md lists its fields)::

    {"question_id": 1, "category": "adversarial",
     "sample_cluster_ids": [0, 0, 1, ...],   # (N,) meaning cluster of each sample
     "greedy_cluster_id": 0,                 # K (a new id) when the greedy answer matches none
     "cluster_probs": [0.93, 0.07],          # (K,) SE cluster probabilities; null without log-probs
     "scores": {"semantic_entropy": 0.25, ...}}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from semantic_entropy.sampling.generations_io import SAMPLE_TOKEN_LOGPROBS, GenerationsError, QuestionGenerations
from semantic_entropy.scoring.judges import Judge
from semantic_entropy.scoring.registry import USES_SIMILARITY, Measure, MeasureInputs, missing_fields, score_name


@dataclass(frozen=True)
class ScoringSettings:
    judge: Judge
    measures: tuple[Measure, ...]
    strict: bool = True

    def score_names(self) -> dict[str, str]:
        """Default measure name -> the name this run writes."""
        return {
            measure.name: score_name(measure, self.judge.name, self.strict, self.judge.question_prefix)
            for measure in self.measures
        }


@dataclass(frozen=True)
class SkippedMeasure:
    measure: str
    missing: tuple[str, ...]


def score_question(record: QuestionGenerations, settings: ScoringSettings) -> tuple[dict, list[SkippedMeasure]]:
    """The output record of one question, and the measures skipped for lack of inputs.

    A measure that fails on bad values (e.g. an answer that is only EOS) raises
    GenerationsError naming the record's file position and question_id.
    """
    available = record.available_fields()
    runnable, skipped = [], []
    for measure in settings.measures:
        missing = missing_fields(measure, available)
        if missing:
            skipped.append(SkippedMeasure(measure.name, tuple(missing)))
        else:
            runnable.append(measure)

    greedy_text = record.greedy.text if record.greedy is not None else None
    judgement = settings.judge.judge(
        record.question, record.sample_texts, greedy_text,
        strict=settings.strict, need_similarity=any(x.uses == USES_SIMILARITY for x in runnable),
    )
    inputs = MeasureInputs(record, judgement)
    names = settings.score_names()

    def fail(what: str, error: Exception):
        raise GenerationsError(f"{record.where()}: {what}: {error}") from error

    scores = {}
    for measure in runnable:
        try:
            value = float(measure.compute(inputs))
        except ValueError as error:
            fail(measure.name, error)
        if not math.isfinite(value):
            fail(measure.name, ValueError(f"score is {value}"))
        scores[names[measure.name]] = value

    cluster_probs = None
    if SAMPLE_TOKEN_LOGPROBS in available:
        try:
            cluster_probs = np.exp(inputs.cluster_log_probs).tolist()
        except ValueError as error:
            fail("cluster_probs", error)

    output = {
        "question_id": record.question_id,
        "category": record.category,
        "sample_cluster_ids": list(judgement.sample_cluster_ids),
        "greedy_cluster_id": judgement.greedy_cluster_id,
        "cluster_probs": cluster_probs,
        "scores": scores,
    }
    return output, skipped


def score_questions(records: Sequence[QuestionGenerations], settings: ScoringSettings) -> list[dict]:
    """Output records of several questions (skip messages dropped): a convenience for notebooks."""
    return [score_question(record, settings)[0] for record in records]
