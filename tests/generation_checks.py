"""Comparison of two generations files: the same questions, texts and tokens, floats within rounding."""

import numpy as np
import pytest


def assert_same_generations(a: list[dict], b: list[dict], atol: float = 1e-5) -> None:
    """Identical ids (in order), texts, tokens and EOS flags; log-probs, entropies and masses within `atol`."""
    assert [g["question_id"] for g in a] == [g["question_id"] for g in b]
    for ga, gb in zip(a, b):
        for x, y in zip([ga["greedy"], *ga["samples"]], [gb["greedy"], *gb["samples"]], strict=True):
            assert (x["text"], x["token_ids"], x["ends_with_eos"]) == (y["text"], y["token_ids"], y["ends_with_eos"])
            np.testing.assert_allclose(x["token_logprobs"], y["token_logprobs"], atol=atol)
            np.testing.assert_allclose(x["token_entropies"], y["token_entropies"], atol=10 * atol)
        assert ga["first_token"]["yes_mass"] == pytest.approx(gb["first_token"]["yes_mass"], abs=atol)
        assert ga["sampling"] == gb["sampling"]
