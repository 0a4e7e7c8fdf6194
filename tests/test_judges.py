"""Entailment judges: exact normalisation, clustering rules on crafted verdicts, caching, and
the real nli / llm code paths on tiny models saved offline."""

import itertools

import numpy as np
import pytest

from semantic_entropy.scoring.judges import (
    CONTRADICTION,
    ENTAILMENT,
    ENTAILMENT_PROMPT,
    LABELS,
    NEUTRAL,
    ExactJudge,
    LLMJudge,
    NLIJudge,
    PairwiseJudge,
    build_judge,
    canonical_answer,
    nli_label_columns,
    parse_entailment_reply,
    pope_yes_no,
)
from semantic_entropy.demo.tiny_models import save_tiny_causal_lm, save_tiny_nli_model

QUESTION = "Is there a dog in the image?"


# ------------------------------------------------------------------ exact judge


@pytest.mark.parametrize(
    "answer, key",
    [
        ("Yes", "yes"),
        ("yes.", "yes"),
        ("  YES  ", "yes"),
        ("Yes, there is a dog.", "yes"),
        ("No", "no"),
        ("No, there is not.", "no"),
        ("There is no dog in the image.", "no"),  # a yes/no sentence (the question is yes/no)
        ("There is a dog.", "yes"),
    ],
)
def test_exact_canonical_yes_no(answer, key):
    assert canonical_answer(answer, QUESTION) == key


def test_exact_keeps_open_answers_apart():
    question = "What animal is in the image?"
    assert canonical_answer("A dog.", question) == "a dog"
    assert canonical_answer("a  DOG", question) == canonical_answer("A dog!", question)
    assert canonical_answer("a cat", question) != canonical_answer("a dog", question)
    # An answer that starts with yes/no is read as eval_pope reads it, whatever the question.
    assert canonical_answer("No, a cat.", question) == "no"


def test_pope_yes_no_follows_eval_pope():
    assert pope_yes_no("Yes. There is not a cat.") == "yes"  # only the first sentence counts
    assert pope_yes_no("I do not see one") == "no"
    assert pope_yes_no("Sure, one dog") == "yes"


def test_exact_judge_clusters_and_greedy():
    judgement = ExactJudge().judge(QUESTION, ["No", "Yes", "no.", "Yes, there is."], "NO", need_similarity=True)
    assert judgement.sample_cluster_ids == [0, 1, 0, 1]
    assert judgement.greedy_cluster_id == 0
    assert judgement.similarity.tolist() == [[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]]
    other = ExactJudge().judge("What is it?", ["a dog", "a dog"], "a cat")
    assert other.sample_cluster_ids == [0, 0]
    assert other.greedy_cluster_id == 1  # matches no sample's cluster: a new id
    assert other.similarity is None


# ------------------------------------------------------------------ rules on crafted verdicts


class TableJudge(PairwiseJudge):
    """A stub NLI model: verdicts from a table of (premise, hypothesis) -> label."""

    name = "stub"

    def __init__(self, table, default=NEUTRAL):
        super().__init__()
        self.table = table
        self.default = default
        self.calls = []

    def _model_input(self, question, premise, hypothesis):
        return premise, hypothesis

    def _predict(self, model_inputs):
        self.calls.append(list(model_inputs))
        labels = [self.table.get(pair, self.default) for pair in model_inputs]
        probs = np.full((len(labels), 3), 0.1)
        probs[np.arange(len(labels)), labels] = 0.8
        return probs


def test_strict_needs_entailment_both_ways():
    table = {
        ("Paris", "It is Paris"): ENTAILMENT, ("It is Paris", "Paris"): ENTAILMENT,
        ("Paris", "France"): ENTAILMENT, ("France", "Paris"): NEUTRAL,
    }
    judge = TableJudge(table)
    samples = ["Paris", "It is Paris", "France"]
    assert judge.judge("Where?", samples, strict=True).sample_cluster_ids == [0, 0, 1]
    # Non-strict: Paris => France and France ~ Paris (neutral) are enough.
    assert judge.judge("Where?", samples, strict=False).sample_cluster_ids == [0, 0, 0]


def test_non_strict_rejects_contradiction_and_double_neutral():
    table = {("a", "b"): ENTAILMENT, ("b", "a"): CONTRADICTION}  # everything else neutral
    judge = TableJudge(table)
    assert judge.judge("q", ["a", "b"], strict=False).sample_cluster_ids == [0, 1]
    assert judge.judge("q", ["a", "c"], strict=False).sample_cluster_ids == [0, 1]  # neutral both ways


def test_clustering_is_by_first_representative_so_order_matters_when_not_transitive():
    # A ~ B and B ~ C, but A !~ C.
    both = lambda x, y: {(x, y): ENTAILMENT, (y, x): ENTAILMENT}  # noqa: E731
    judge = TableJudge({**both("A", "B"), **both("B", "C")})
    assert judge.judge("q", ["A", "B", "C"]).sample_cluster_ids == [0, 0, 1]  # C meets representative A
    assert judge.judge("q", ["B", "A", "C"]).sample_cluster_ids == [0, 0, 0]  # C meets representative B


def test_transitive_verdicts_give_the_same_partition_in_any_order():
    meaning = {"yes": 1, "Yes": 1, "yeah": 1, "no": 0, "nope": 0, "maybe": 2}
    table = {(a, b): ENTAILMENT if meaning[a] == meaning[b] else CONTRADICTION
             for a, b in itertools.permutations(meaning, 2)}
    judge = TableJudge(table)
    samples = ["yes", "no", "Yes", "maybe", "nope", "yeah", "yes"]

    def partition(texts, ids):
        groups = {}
        for text, cluster in zip(texts, ids):
            groups.setdefault(cluster, set()).add(text)
        return sorted(sorted(g) for g in groups.values())

    expected = partition(samples, judge.judge("q", samples).sample_cluster_ids)
    rng = np.random.default_rng(0)
    for _ in range(10):
        order = [samples[i] for i in rng.permutation(len(samples))]
        ids = judge.judge("q", order).sample_cluster_ids
        assert partition(order, ids) == expected
        assert sorted(set(ids)) == list(range(3))  # dense, first-appearance ids
        assert ids[0] == 0


def test_identical_answers_cost_nothing_and_pairs_are_cached():
    judge = TableJudge({})
    judgement = judge.judge(QUESTION, ["Yes"] * 10, "Yes", need_similarity=True)
    assert judgement.sample_cluster_ids == [0] * 10 and judgement.greedy_cluster_id == 0
    assert judge.num_model_inputs == 0 and judge.calls == []
    assert judgement.similarity.tolist() == np.ones((10, 10)).tolist()

    judge.judge(QUESTION, ["Yes", "No"] * 5, None)
    assert judge.num_model_inputs == 2  # (Yes, No) and (No, Yes), once each
    judge.judge(QUESTION, ["No", "Yes", "Yes"], None)
    assert judge.num_model_inputs == 2  # all from the cache


def test_greedy_joins_matching_cluster_or_gets_new_id():
    table = {("Yes", "Yes, there is"): ENTAILMENT, ("Yes, there is", "Yes"): ENTAILMENT}
    judge = TableJudge(table, default=CONTRADICTION)
    judgement = judge.judge(QUESTION, ["No", "Yes"], "Yes, there is")
    assert judgement.greedy_cluster_id == 1
    assert judge.judge(QUESTION, ["No", "Yes"], "Maybe").greedy_cluster_id == 2


def test_pairwise_similarity_averages_entailment_both_ways():
    table = {("a", "b"): ENTAILMENT, ("b", "a"): NEUTRAL}
    judgement = TableJudge(table).judge("q", ["a", "b", "a"], need_similarity=True)
    # P(entail a=>b) = .8, P(entail b=>a) = .1: W = .45
    assert judgement.similarity == pytest.approx(np.array([[1, 0.45, 1], [0.45, 1, 0.45], [1, 0.45, 1]]))


# ------------------------------------------------------------------ label names and replies


def test_nli_label_columns_from_id2label():
    assert nli_label_columns({0: "ENTAILMENT", 1: "Neutral", 2: "contradiction"}) == (2, 1, 0)
    with pytest.raises(ValueError, match="id2label"):
        nli_label_columns({0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"})


def test_parse_entailment_reply_defaults_to_neutral():
    assert parse_entailment_reply("Entailment") == ENTAILMENT
    assert parse_entailment_reply("contradiction.") == CONTRADICTION
    assert parse_entailment_reply("Neutral, because") == NEUTRAL
    assert parse_entailment_reply("") == NEUTRAL
    assert parse_entailment_reply("one two three four five entailment") == NEUTRAL  # too late


def test_entailment_prompt_snapshot():
    assert ENTAILMENT_PROMPT.format(question="Is there a dog?", a="Yes", b="No") == (
        'We are evaluating answers to the question "Is there a dog?"\n'
        "Here are two possible answers:\n"
        "Possible Answer 1: Yes\n"
        "Possible Answer 2: No\n"
        "Does Possible Answer 1 semantically entail Possible Answer 2? "
        "Respond with entailment, contradiction, or neutral."
    )


# ------------------------------------------------------------------ real nli code path


@pytest.fixture(scope="module")
def nli_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_nli")
    shuffled_labels = {0: "ENTAILMENT", 1: "Neutral", 2: "Contradiction"}
    return {
        "entail": save_tiny_nli_model(str(root / "entail"), {"entailment": 0.6, "neutral": 0.3, "contradiction": 0.1},
                                      shuffled_labels),
        "neutral": save_tiny_nli_model(str(root / "neutral"), {"entailment": 0.3, "neutral": 0.5, "contradiction": 0.2}),
    }


def test_nli_judge_reads_labels_and_batches(nli_folders):
    judge = NLIJudge.from_pretrained(nli_folders["entail"], device="cpu", batch_size=2)
    pairs = [("Yes", "No"), ("No", "Yes"), ("a dog", "Yes")]
    probs = judge.label_probs(QUESTION, pairs)  # (3, 3) in LABELS order
    assert LABELS == ("contradiction", "neutral", "entailment")
    assert probs == pytest.approx(np.tile([0.1, 0.3, 0.6], (3, 1)), abs=1e-5)
    assert judge.num_model_inputs == 3


def test_nli_judge_question_prefix(nli_folders):
    with_question = NLIJudge.from_pretrained(nli_folders["entail"])
    assert with_question._model_input(QUESTION, "Yes", "No") == (f"{QUESTION} Yes", f"{QUESTION} No")
    bare = NLIJudge.from_pretrained(nli_folders["entail"], question_prefix=False)
    assert bare._model_input(QUESTION, "Yes", "No") == ("Yes", "No")


def test_nli_judge_clusters_strict_and_non_strict(nli_folders):
    samples = ["Yes", "No", "Yes", "a dog"]
    entail = build_judge("nli", model_path=nli_folders["entail"], device="cpu")
    judgement = entail.judge(QUESTION, samples, "No", strict=True, need_similarity=True)
    assert judgement.sample_cluster_ids == [0, 0, 0, 0] and judgement.greedy_cluster_id == 0
    expected = np.where(np.equal.outer(samples, samples), 1.0, 0.6)
    assert judgement.similarity == pytest.approx(expected, abs=1e-5)

    neutral = build_judge("nli", model_path=nli_folders["neutral"], device="cpu")
    assert neutral.judge(QUESTION, samples, strict=True).sample_cluster_ids == [0, 1, 0, 2]
    assert neutral.judge(QUESTION, samples, strict=False).sample_cluster_ids == [0, 1, 0, 2]  # neutral both ways
    assert neutral.describe()["id2label"] == {"0": "contradiction", "1": "neutral", "2": "entailment"}


# ------------------------------------------------------------------ real llm code path


@pytest.fixture(scope="module")
def llm_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_lm")
    return {word: save_tiny_causal_lm(str(root / word), word) for word in ("entailment", "contradiction")}


def test_llm_judge_from_folder(llm_folders):
    judge = build_judge("llm", model_path=llm_folders["entailment"], device="cpu", batch_size=2)
    judgement = judge.judge(QUESTION, ["Yes", "No", "Yes"], "maybe", strict=True, need_similarity=True)
    assert judgement.sample_cluster_ids == [0, 0, 0] and judgement.greedy_cluster_id == 0
    assert judgement.similarity == pytest.approx(np.ones((3, 3)))
    assert judge.num_model_inputs == 6  # Yes/No/maybe: 3 * 2 ordered pairs, in batches of 2
    assert all(reply.split()[0] == "entailment" for reply in judge.last_replies)


def test_llm_judge_with_loaded_model_and_prompt_hook(llm_folders):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(llm_folders["contradiction"])
    tokenizer = AutoTokenizer.from_pretrained(llm_folders["contradiction"])
    rendered = []

    def render(prompt):
        rendered.append(prompt)
        return f"USER: {prompt} ASSISTANT:"

    judge = LLMJudge(model, tokenizer, render_prompt=render, max_new_tokens=2)
    judgement = judge.judge(QUESTION, ["Yes", "No"], None, strict=False)
    assert judgement.sample_cluster_ids == [0, 1]
    assert rendered[0] == ENTAILMENT_PROMPT.format(question=QUESTION, a="Yes", b="No")
    assert judge.describe()["unparseable_reply"] == "neutral"


def test_build_judge_argument_errors(llm_folders):
    with pytest.raises(ValueError, match="needs --judge-model"):
        build_judge("nli")
    with pytest.raises(ValueError, match="takes no model"):
        build_judge("exact", model_path="x")
    with pytest.raises(ValueError, match="always shows the question"):
        build_judge("llm", model_path=llm_folders["entailment"], question_prefix=False)
