"""Generations as LM-Polygraph statistics: its conventions, checked by hand (no lm_polygraph needed)."""

import importlib.util
import math

import numpy as np
import pytest

from semantic_entropy.polygraph import adapter as pa
from semantic_entropy.sampling.generations_io import Answer, QuestionGenerations
from semantic_entropy.scoring.judges import CONTRADICTION, ENTAILMENT, NEUTRAL, ExactJudge
from semantic_entropy.scoring.registry import select_measures
from tests.judge_stubs import VerdictJudge

PROMPT = "Is there a dog in the image?\nAnswer the question using a single word or phrase."


def answer(text, logprobs, eos=True, entropies=None):
    return Answer(text, tuple(logprobs), tuple(entropies) if entropies else None, eos)


def question(samples, greedy=None, prompt=PROMPT, **extra):
    return QuestionGenerations(question_id=1, category="random", prompt=prompt, greedy=greedy,
                               samples=tuple(samples), **extra)


def test_sample_log_prob_is_the_sum_with_eos_and_likelihoods_drop_eos():
    samples = [answer("Yes", [-1.0, -0.3]), answer("No", [-1.5, -2.5, -0.2]), answer("Yes no", [-0.4, -0.6], eos=False)]
    stats = pa.polygraph_statistics(question(samples))
    assert stats["sample_log_probs"] == [[pytest.approx(-1.3), pytest.approx(-4.2), pytest.approx(-1.0)]]
    assert stats["sample_log_likelihoods"] == [[[-1.0], [-1.5, -2.5], [-0.4, -0.6]]]
    assert [len(t) for t in stats["sample_tokens"][0]] == [1, 2, 2]  # EOS excluded
    assert stats["sample_texts"] == [["Yes", "No", "Yes no"]]


def test_eos_only_samples_are_dropped_as_lm_polygraph_does():
    samples = [answer("", [-3.0]), answer("Yes", [-1.0, -0.3]), answer("", [-2.0])]
    stats = pa.polygraph_statistics(question(samples), ExactJudge())
    assert stats["sample_texts"] == [["Yes"]]
    assert stats["sample_log_probs"] == [[pytest.approx(-1.3)]]
    assert stats["semantic_matrix_entail"].shape == (1, 1, 1)
    only_eos = pa.polygraph_statistics(question([answer("", [-3.0])], greedy=answer("No", [-0.1, -0.2])), ExactJudge())
    assert set(only_eos) == {"greedy_texts", "greedy_log_likelihoods", "greedy_tokens"}  # no sample statistics


def test_texts_only_records_keep_every_sample():
    stats = pa.polygraph_statistics(question([Answer("Yes"), Answer("")]))
    assert stats["sample_texts"] == [["Yes", ""]] and "sample_log_probs" not in stats


def test_greedy_statistics_include_eos():
    greedy = answer("Yes", [-0.25, -0.5, -0.01], entropies=[0.6, 0.2, 0.05])
    stats = pa.polygraph_statistics(question([answer("Yes", [-1.0, -0.3])], greedy=greedy, p_true=0.9))
    assert stats["greedy_log_likelihoods"] == [[-0.25, -0.5, -0.01]]
    assert stats["entropy"] == [[0.6, 0.2, 0.05]]
    assert stats["greedy_texts"] == ["Yes"] and len(stats["greedy_tokens"][0]) == 3
    assert stats["p_true"] == [pytest.approx(math.log(0.9))]  # LM-Polygraph stores log P(True)


def test_exact_judge_gives_one_hot_entailment_within_and_contradiction_across_clusters():
    stats = pa.polygraph_statistics(question([answer(t, [-0.1, -0.1]) for t in ("Yes", "No", "yes.")]), ExactJudge())
    np.testing.assert_array_equal(stats["semantic_matrix_entail"][0], [[1, 0, 1], [0, 1, 0], [1, 0, 1]])
    np.testing.assert_array_equal(stats["semantic_matrix_contra"][0], 1 - stats["semantic_matrix_entail"][0])
    assert stats["entailment_id"] == ENTAILMENT
    assert stats["semantic_classes_entail"] == {"sample_to_class": {0: {0: 0, 1: 1, 2: 0}},
                                                "class_to_sample": {0: [[0, 2], [1]]}}


def test_pairwise_judge_label_probs_are_asymmetric_and_identical_texts_entail():
    judge = VerdictJudge({("A", "B"): ENTAILMENT, ("B", "A"): NEUTRAL, ("A", "C"): CONTRADICTION})
    probs = pa.judge_label_probs(judge, "q", ["A", "B", "A", "C"])
    assert probs.shape == (4, 4, 3)
    assert probs[0, 1].tolist() == [0.1, 0.1, 0.8] and probs[1, 0].tolist() == [0.1, 0.8, 0.1]
    assert probs[0, 3].tolist() == [0.8, 0.1, 0.1]
    assert probs[0, 2].tolist() == probs[1, 1].tolist() == [0.0, 0.0, 1.0]  # identical texts, diagonal
    stats = pa.semantic_statistics(probs)
    classes = stats["semantic_matrix_classes"][0]
    assert classes[0, 1] == ENTAILMENT and classes[1, 0] == NEUTRAL
    assert stats["semantic_classes_entail"]["class_to_sample"][0] == [[0, 2], [1], [3]]  # A=>B one way only
    # Log-probabilities as logits: exp(e) / (exp(e) + exp(c)) = p_e / (p_e + p_c).
    e, c = stats["semantic_matrix_entail_logits"][0, 0, 1], stats["semantic_matrix_contra_logits"][0, 0, 1]
    assert math.exp(e) / (math.exp(e) + math.exp(c)) == pytest.approx(0.8 / 0.9)


def test_first_representative_classes_match_strict_clustering_of_the_judge():
    # A ~ B, B ~ C, not A ~ C: C meets representative A and founds a class, as our strict judge does.
    both = {("A", "B"): ENTAILMENT, ("B", "A"): ENTAILMENT, ("B", "C"): ENTAILMENT, ("C", "B"): ENTAILMENT}
    judge = VerdictJudge(both)
    labels = pa.judge_label_probs(judge, "q", ["A", "B", "C"]).argmax(-1)  # (3, 3)
    classes = pa.first_representative_classes(labels == ENTAILMENT)
    assert classes == judge.judge("q", ["A", "B", "C"]).sample_cluster_ids == [0, 0, 1]


def test_stack_statistics_joins_items_and_reindexes_classes():
    judge = ExactJudge()
    one = pa.polygraph_statistics(question([answer("Yes", [-0.1, -0.1]), answer("No", [-0.2, -0.1])]), judge)
    two = pa.polygraph_statistics(question([answer("No", [-0.3, -0.1]), answer("No", [-0.2, -0.1])]), judge)
    batch = pa.stack_statistics([one, two])
    assert batch["semantic_matrix_entail"].shape == (2, 2, 2)
    assert batch["semantic_classes_entail"]["class_to_sample"] == {0: [[0], [1]], 1: [[0, 1]]}
    assert batch["sample_texts"] == [["Yes", "No"], ["No", "No"]]
    three = pa.polygraph_statistics(question([answer("No", [-0.3, -0.1])]), judge)
    with pytest.raises(ValueError, match="batches of one question"):
        pa.stack_statistics([one, three])


@pytest.mark.skipif(importlib.util.find_spec("lm_polygraph") is not None, reason="the polygraph extra is installed")
def test_polygraph_measures_without_the_extra_name_the_install():
    assert [x.name for x in select_measures(["naive_entropy"])] == ["naive_entropy"]  # no import needed
    with pytest.raises(ValueError, match=r"pip install -e '\.\[polygraph\]'"):
        select_measures(["polygraph:SemanticEntropy"])
