"""Our measures inside LM-Polygraph: an `Estimator` generic over a registry measure, and the
stat calculators that feed it (needs the extra: `pip install -e '.[polygraph]'`).

Loadable by LM-Polygraph's factories from this module's path:

    FactoryEstimator()("semantic_entropy.polygraph.estimators", {"measure": "yes_no_entropy"})
    StatCalculatorContainer(name="GenerationsStatCalculator", builder="semantic_entropy.polygraph.estimators",
                            cfg={"generations_file": "generations.jsonl"}, stats=..., dependencies=[])
        (`generations_calculator_container` builds it)

- `RegistryMeasureEstimator(measure=NAME, judge=..., strict=..., question_prefix=...)`: any
  measure of `semantic_entropy.scoring.registry` (default `yes_no_entropy`, the exact first-token
  yes/no entropy) as a sequence-level estimator; higher = more uncertain, as LM-Polygraph asks.
  Its name is the score name our stage 2 writes (`registry.score_name`), and its statistics
  are named after the measure's `needs` (`STATISTIC_OF_FIELD`), e.g. yes_no_entropy reads
  `first_token_yes_no_mass`, (B, 2) = (yes mass, no mass) of the first answer token.
- `GenerationsStatCalculator`: replays stage-1 generations. The batch's input texts are
  question ids (`replay_dataset` builds such a dataset); it supplies our statistics and every
  LM-Polygraph statistic of `polygraph_adapter`, so one run computes LM-Polygraph's estimators
  and ours on the same answers.
- `FirstTokenYesNoMassCalculator`: computes `first_token_yes_no_mass` from an LM-Polygraph
  whitebox model and the input prompts (one forward pass; softmax of the untempered logits at
  the last prompt position, summed over the tokenizer's yes / no pieces), so yes_no_entropy runs
  in LM-Polygraph's own pipeline on any causal LM it wraps.
- The vision-aware measures read the later passes' fields as two statistics,
  `llava_method_probes` (semantic_entropy.method_probes: grounding_disagreement,
  counterfactual_disagreement) and `llava_baseline_probes` (semantic_entropy.baseline_probes:
  the published detectors and prior_vauq), which `GenerationsStatCalculator` supplies when every
  record of the batch has them. The method-v2 measures read the settings file of
  `semantic_entropy.scoring.method_settings`, as stage 2 does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from lm_polygraph.estimators.estimator import Estimator
from lm_polygraph.stat_calculators.stat_calculator import StatCalculator
from lm_polygraph.utils.dataset import Dataset
from lm_polygraph.utils.factory_stat_calculator import StatCalculatorContainer

from semantic_entropy.sampling.answer_tokens import yes_no_token_ids
from semantic_entropy.sampling.generations_io import (
    ANSWER_COUNTERFACTUALS,
    ANSWER_IMAGE_ATTENTION,
    FIRST_TOKEN_YES_NO_MASS,
    GLSIM_SIMILARITIES,
    GREEDY_TEXT,
    GREEDY_TOKEN_ENTROPIES,
    GREEDY_TOKEN_LOGPROBS,
    NO_IMAGE_YES_NO_MASS,
    OBJECT_GROUNDING,
    P_TRUE,
    SAMPLE_TEXTS,
    SAMPLE_TOKEN_LOGPROBS,
    VAUQ_ENTROPIES,
    VL_UNCERTAINTY_PAIRS,
    QuestionGenerations,
    iter_generations,
)
from semantic_entropy.scoring.judges import Judge, build_judge
from semantic_entropy.polygraph.adapter import SEMANTIC_STATISTICS, polygraph_statistics, stack_statistics
from semantic_entropy.scoring.registry import MEASURES_BY_NAME, USES_NOTHING, MeasureInputs, score_name

# The default measure of RegistryMeasureEstimator: the method-v2 study's winner (docs/method.md, "Method v2").
DEFAULT_MEASURE = "yes_no_entropy"

# Our statistics, one entry per batch item.
YES_NO_MASS = "first_token_yes_no_mass"  # (yes_mass, no_mass)
SAMPLES = "llava_samples"  # tuple of generations_io.Answer, all N samples (EOS-only ones kept)
GREEDY = "llava_greedy"  # generations_io.Answer or None
P_TRUE_PROBABILITY = "llava_p_true"  # P(True), a probability (LM-Polygraph's `p_true` is its log)
JUDGEMENTS = "llava_judgements"  # judges.Judgement of the samples (and the greedy answer)
JUDGE_SETTINGS = "llava_judge_settings"  # {"judge", "strict", "question_prefix"}: one per batch
METHOD_PROBES = "llava_method_probes"  # generations_io.MethodProbes (semantic_entropy.method_probes's field)
BASELINE_PROBES = "llava_baseline_probes"  # generations_io.BaselineProbes (semantic_entropy.baseline_probes's field)

STATISTIC_OF_FIELD = {
    FIRST_TOKEN_YES_NO_MASS: YES_NO_MASS,
    SAMPLE_TEXTS: SAMPLES,
    SAMPLE_TOKEN_LOGPROBS: SAMPLES,
    GREEDY_TEXT: GREEDY,
    GREEDY_TOKEN_LOGPROBS: GREEDY,
    GREEDY_TOKEN_ENTROPIES: GREEDY,
    P_TRUE: P_TRUE_PROBABILITY,
    OBJECT_GROUNDING: METHOD_PROBES,
    ANSWER_COUNTERFACTUALS: METHOD_PROBES,
    VAUQ_ENTROPIES: BASELINE_PROBES,
    NO_IMAGE_YES_NO_MASS: BASELINE_PROBES,
    ANSWER_IMAGE_ATTENTION: BASELINE_PROBES,
    GLSIM_SIMILARITIES: BASELINE_PROBES,
    VL_UNCERTAINTY_PAIRS: BASELINE_PROBES,
}
OUR_STATISTICS = [YES_NO_MASS, SAMPLES, GREEDY, P_TRUE_PROBABILITY, JUDGEMENTS, JUDGE_SETTINGS, METHOD_PROBES,
                  BASELINE_PROBES]
ADAPTER_STATISTICS = [
    "greedy_texts", "greedy_log_likelihoods", "greedy_tokens", "entropy", "sample_texts", "sample_log_probs",
    "sample_log_likelihoods", "sample_tokens", "p_true", *sorted(SEMANTIC_STATISTICS),
]  # fmt: skip


# --------------------------------------------------------------------------------------------
# The estimator


def records_from_statistics(stats: Mapping, batch_size: int) -> list[QuestionGenerations]:
    """Minimal generations records rebuilt from our statistics (fields absent from stats: None)."""

    def column(name):
        return stats[name] if name in stats else [None] * batch_size

    return [
        QuestionGenerations(
            question_id=i, category=None, prompt="", greedy=greedy, samples=tuple(samples or ()),
            yes_no_mass=None if mass is None else (float(mass[0]), float(mass[1])),
            p_true=p_true, source="lm_polygraph batch", method_probes=method, baseline_probes=baselines,
        )
        for i, (greedy, samples, mass, p_true, method, baselines) in enumerate(
            zip(column(GREEDY), column(SAMPLES), column(YES_NO_MASS), column(P_TRUE_PROBABILITY),
                column(METHOD_PROBES), column(BASELINE_PROBES))
        )
    ]


class RegistryMeasureEstimator(Estimator):
    """A measure of our registry as an LM-Polygraph sequence-level estimator.

    The judge settings name the score of a judge-dependent measure; the batch's judgements
    must have been made with them (checked against the `llava_judge_settings` statistic).
    """

    def __init__(self, measure: str = DEFAULT_MEASURE, judge: str = "exact", strict: bool = True,
                 question_prefix: bool | None = None):
        if measure not in MEASURES_BY_NAME:
            raise ValueError(f"unknown measure {measure!r}; known: {list(MEASURES_BY_NAME)}")
        self.measure = MEASURES_BY_NAME[measure]
        self.judge_settings = {"judge": judge, "strict": strict, "question_prefix": question_prefix}
        statistics = sorted({STATISTIC_OF_FIELD[field] for field in self.measure.needs})
        if self.measure.uses != USES_NOTHING:
            statistics += [JUDGEMENTS, JUDGE_SETTINGS]
        super().__init__(statistics, "sequence")

    def __str__(self):
        settings = self.judge_settings
        return score_name(self.measure, settings["judge"], settings["strict"], settings["question_prefix"])

    def __call__(self, stats: Mapping) -> np.ndarray:
        batch_size = len(stats[self.stats_dependencies[0]])
        if self.measure.uses == USES_NOTHING:
            judgements = [None] * batch_size
        else:
            if dict(stats[JUDGE_SETTINGS]) != self.judge_settings:
                raise ValueError(f"{self}: the judgements were made with {dict(stats[JUDGE_SETTINGS])}, "
                                 f"not {self.judge_settings}")
            judgements = stats[JUDGEMENTS]
        records = records_from_statistics(stats, batch_size)
        return np.array([float(self.measure.compute(MeasureInputs(r, j))) for r, j in zip(records, judgements)])


def load_estimator(config) -> RegistryMeasureEstimator:
    """Entry point of LM-Polygraph's `FactoryEstimator` for this module's path."""
    return RegistryMeasureEstimator(**dict(config))


# --------------------------------------------------------------------------------------------
# Stat calculators


def judge_settings_of(judge: Judge, strict: bool) -> dict:
    return {"judge": judge.name, "strict": strict, "question_prefix": judge.question_prefix}


def our_statistics(records: Sequence[QuestionGenerations], judge: Judge, strict: bool) -> dict:
    """Our statistics of a batch; a field that some record lacks is left out for the batch."""
    stats = {
        SAMPLES: [r.samples for r in records],
        JUDGEMENTS: [
            judge.judge(r.question, r.sample_texts, r.greedy.text if r.greedy else None, strict=strict,
                        need_similarity=True)
            for r in records
        ],
        JUDGE_SETTINGS: judge_settings_of(judge, strict),
    }
    if all(r.greedy is not None for r in records):
        stats[GREEDY] = [r.greedy for r in records]
    if all(r.yes_no_mass is not None for r in records):
        stats[YES_NO_MASS] = [r.yes_no_mass for r in records]
    if all(r.p_true is not None for r in records):
        stats[P_TRUE_PROBABILITY] = [r.p_true for r in records]
    if all(r.method_probes is not None for r in records):
        stats[METHOD_PROBES] = [r.method_probes for r in records]
    if all(r.baseline_probes is not None for r in records):
        stats[BASELINE_PROBES] = [r.baseline_probes for r in records]
    return stats


class GenerationsStatCalculator(StatCalculator):
    """Statistics of stage-1 generations, looked up by question id (the batch's input texts)."""

    @staticmethod
    def meta_info() -> tuple[list[str], list[str]]:
        return OUR_STATISTICS + ADAPTER_STATISTICS, []

    def __init__(self, records: Mapping[str, QuestionGenerations], judge: Judge, strict: bool = True):
        super().__init__()
        self.records = dict(records)
        self.judge = judge
        self.strict = strict

    def __call__(self, dependencies, texts, model=None, max_new_tokens: int = 100, **kwargs) -> dict:
        missing = [t for t in texts if t not in self.records]
        if missing:
            raise ValueError(f"no generations for question id(s) {missing}")
        records = [self.records[t] for t in texts]
        stats = stack_statistics([polygraph_statistics(r, self.judge) for r in records])
        stats.update(our_statistics(records, self.judge, self.strict))
        return stats


def read_generations_by_id(generations_file: str) -> dict[str, QuestionGenerations]:
    return {str(record.question_id): record for record in iter_generations(generations_file)}


class FirstTokenYesNoMassCalculator(StatCalculator):
    """`first_token_yes_no_mass` from an LM-Polygraph whitebox model, one forward pass per batch."""

    @staticmethod
    def meta_info() -> tuple[list[str], list[str]]:
        return [YES_NO_MASS], []

    def __call__(self, dependencies, texts, model, max_new_tokens: int = 100, **kwargs) -> dict:
        import torch

        batch = {k: v.to(model.device()) for k, v in model.tokenize(list(texts)).items()}
        with torch.no_grad():
            logits = model.model(**batch).logits.float()  # (B, T, V)
        last = last_prompt_positions(batch["attention_mask"])  # (B,)
        probs = torch.softmax(logits[torch.arange(len(last)), last], dim=-1)  # (B, V)
        yes_ids, no_ids = yes_no_token_ids(model.tokenizer, vocab_limit=probs.shape[-1])
        masses = torch.stack([probs[:, yes_ids].sum(-1), probs[:, no_ids].sum(-1)], dim=-1)  # (B, 2)
        return {YES_NO_MASS: masses.cpu().numpy().tolist()}


def last_prompt_positions(attention_mask):
    """(B,) index of each row's last real token, for left or right padding.

    >>> import torch
    >>> last_prompt_positions(torch.tensor([[0, 1, 1], [1, 1, 0]])).tolist()
    [2, 1]
    """
    import torch

    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)  # (T,)
    return (attention_mask.long() * positions).argmax(dim=1)  # (B,)


def load_stat_calculator(config, environment=None) -> StatCalculator:
    """Entry point of LM-Polygraph's `FactoryStatCalculator`; `config["obj"]` names the calculator.

    GenerationsStatCalculator reads `generations_file` and builds its judge from `judge`
    (exact), `judge_model`, `strict` (true), `question_prefix` (true) and `device` (cpu).
    """
    name = config.get("obj", GenerationsStatCalculator.__name__)
    if name == FirstTokenYesNoMassCalculator.__name__:
        return FirstTokenYesNoMassCalculator()
    if name != GenerationsStatCalculator.__name__:
        raise ValueError(f"unknown stat calculator {name!r} in {__name__}")
    judge = build_judge(config.get("judge", "exact"), model_path=config.get("judge_model"),
                        question_prefix=config.get("question_prefix", True), device=config.get("device", "cpu"))
    return GenerationsStatCalculator(read_generations_by_id(config["generations_file"]), judge,
                                     strict=config.get("strict", True))


def calculator_container(calculator: type[StatCalculator], config: Mapping | None = None) -> StatCalculatorContainer:
    """The description LM-Polygraph's UEManager needs to build one of our calculators."""
    stats, dependencies = calculator.meta_info()
    return StatCalculatorContainer(
        name=calculator.__name__, stats=stats, dependencies=dependencies, builder=__name__,
        cfg={"obj": calculator.__name__, **dict(config or {})},
    )


def replay_dataset(generations_file: str, batch_size: int = 1) -> Dataset:
    """An LM-Polygraph dataset whose inputs are the question ids of a generations file (targets
    are the greedy answers, for reference only)."""
    records = list(iter_generations(generations_file))
    return Dataset(
        [str(r.question_id) for r in records], [r.greedy.text if r.greedy else "" for r in records], batch_size
    )
