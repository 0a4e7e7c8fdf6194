"""A stub pairwise judge for tests: fixed verdicts instead of an NLI model."""

import numpy as np

from semantic_entropy.scoring.judges import NEUTRAL, PairwiseJudge


class VerdictJudge(PairwiseJudge):
    """A stub NLI model: (premise, hypothesis) -> label, 0.8 on that label and 0.1 on the others."""

    name = "stub"

    def __init__(self, verdicts, default=NEUTRAL):
        super().__init__()
        self.verdicts, self.default = verdicts, default

    def _model_input(self, question, premise, hypothesis):
        return premise, hypothesis

    def _predict(self, model_inputs):
        labels = [self.verdicts.get(pair, self.default) for pair in model_inputs]
        probs = np.full((len(labels), 3), 0.1)
        probs[np.arange(len(labels)), labels] = 0.8
        return probs
