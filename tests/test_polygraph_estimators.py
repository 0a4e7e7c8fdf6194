"""LM-Polygraph's estimators on our answers, and our score inside LM-Polygraph (extra `polygraph`).

Where LM-Polygraph and we compute the same quantity under the same convention the values agree
to 1e-6; where conventions differ (docs/design.md) the tests pin the documented difference.
"""

import json
import math

import numpy as np
import pytest

pytest.importorskip("lm_polygraph")

from lm_polygraph.estimators import Estimator  # noqa: E402
from lm_polygraph.utils.builder_enviroment_stat_calculator import BuilderEnvironmentStatCalculator  # noqa: E402
from lm_polygraph.utils.factory_estimator import FactoryEstimator  # noqa: E402
from lm_polygraph.utils.factory_stat_calculator import FactoryStatCalculator  # noqa: E402
from lm_polygraph.utils.manager import UEManager  # noqa: E402

from llava.jsonl_io import read_jsonl  # noqa: E402
from semantic_entropy.scoring import measures as m  # noqa: E402
from semantic_entropy.polygraph import estimators as pe  # noqa: E402
from semantic_entropy.compute_se_myself import main as compute_se_main  # noqa: E402
from semantic_entropy.sampling.generations_io import Answer, QuestionGenerations, iter_generations  # noqa: E402
from semantic_entropy.scoring.judges import CONTRADICTION, ENTAILMENT, ExactJudge  # noqa: E402
from semantic_entropy.polygraph.adapter import kept_sample_indices  # noqa: E402
from semantic_entropy.polygraph.measures import WIRED_ESTIMATORS  # noqa: E402
from semantic_entropy.scoring.registry import select_measures  # noqa: E402
from semantic_entropy.scoring.per_question import ScoringSettings, score_question  # noqa: E402
from tests.judge_stubs import VerdictJudge  # noqa: E402

TOL = 1e-6
PROMPT = "Is there a dog in the image?\nAnswer the question using a single word or phrase."
OPEN_PROMPT = "What animal is in the image?\nAnswer the question using a single word or phrase."


def answer(text, logprobs, eos=True, entropies=None):
    return Answer(text, tuple(logprobs), tuple(entropies or [0.1 * (i + 1) for i in range(len(logprobs))]), eos)


def question(samples, greedy=None, prompt=PROMPT, question_id=1, **extra):
    greedy = greedy or answer("Yes", [-0.25, -0.5, -0.01], entropies=[0.6, 0.2, 0.05])
    return QuestionGenerations(question_id=question_id, category="random", prompt=prompt, greedy=greedy,
                               samples=tuple(samples), **extra)


def polygraph(name):
    return "polygraph:" + name


def score(record, names, judge=None):
    judge = judge or ExactJudge()
    settings = ScoringSettings(judge=judge, measures=tuple(select_measures(names, judge=judge)))
    output, skipped = score_question(record, settings)
    assert not skipped, skipped
    return output["scores"]


# Samples with EOS (varied lengths), one that hit max_new_tokens, no EOS-only sample.
WITH_EOS = question([
    answer("Yes", [-1.0, -0.3]), answer("No", [-1.5, -2.5, -0.2]), answer("yes.", [-1.0, -0.5, -0.4]),
    answer("Yes there is", [-0.4, -0.6, -0.2], eos=False),
], p_true=0.9, yes_no_mass=(0.81, 0.17))  # fmt: skip
WITHOUT_EOS = question(
    [answer("Yes", [-0.7], eos=False), answer("No", [-1.2, -0.1], eos=False), answer("Yes", [-0.6], eos=False),
     answer("No", [-0.9, -0.2], eos=False)],
    greedy=answer("Yes", [-0.25, -0.5], eos=False, entropies=[0.6, 0.2]),
)


# ------------------------------------------------------------------ greedy answer


@pytest.mark.parametrize("record", [WITH_EOS, WITHOUT_EOS], ids=["eos", "no_eos"])
def test_greedy_estimators_include_eos_and_agree_without_it(record):
    names = ["greedy_neg_log_likelihood", "greedy_perplexity", "greedy_mean_token_entropy",
             polygraph("MaximumSequenceProbability"), polygraph("Perplexity"), polygraph("MeanTokenEntropy")]
    s = score(record, names)
    greedy = record.greedy
    eos_logprob = greedy.token_logprobs[-1] if greedy.ends_with_eos else 0.0
    eos_entropy = greedy.token_entropies[-1] if greedy.ends_with_eos else None
    # LM-Polygraph sums / averages over every token, EOS included.
    assert s["polygraph_MaximumSequenceProbability"] == pytest.approx(-math.fsum(greedy.token_logprobs), abs=TOL)
    expected = s["greedy_neg_log_likelihood"] - eos_logprob
    assert s["polygraph_MaximumSequenceProbability"] == pytest.approx(expected, abs=TOL)
    # Its "Perplexity" is the mean negative log-likelihood, i.e. the LOG of a perplexity.
    assert s["polygraph_Perplexity"] == pytest.approx(-np.mean(greedy.token_logprobs), abs=TOL)
    assert s["polygraph_MeanTokenEntropy"] == pytest.approx(np.mean(greedy.token_entropies), abs=TOL)
    if not greedy.ends_with_eos:  # same convention: the same numbers
        assert s["polygraph_Perplexity"] == pytest.approx(math.log(s["greedy_perplexity"]), abs=TOL)
        assert s["polygraph_MeanTokenEntropy"] == pytest.approx(s["greedy_mean_token_entropy"], abs=TOL)
    else:
        n = len(greedy.token_entropies)
        expected = (s["greedy_mean_token_entropy"] * (n - 1) + eos_entropy) / n
        assert s["polygraph_MeanTokenEntropy"] == pytest.approx(expected, abs=TOL)


# ------------------------------------------------------------------ sample log-probs


@pytest.mark.parametrize("record", [WITH_EOS, WITHOUT_EOS], ids=["eos", "no_eos"])
def test_monte_carlo_entropies_use_sums_with_eos(record):
    names = ["naive_entropy", polygraph("MonteCarloSequenceEntropy"), polygraph("MonteCarloNormalizedSequenceEntropy")]
    s = score(record, names)
    sums = [math.fsum(a.token_logprobs) for a in record.samples]  # EOS included
    lengths = [len(a.token_logprobs) - int(a.ends_with_eos) for a in record.samples]  # EOS excluded
    eos = [a.token_logprobs[-1] if a.ends_with_eos else 0.0 for a in record.samples]
    assert s["polygraph_MonteCarloSequenceEntropy"] == pytest.approx(-np.mean(sums), abs=TOL)
    # sum WITH EOS divided by the number of tokens WITHOUT EOS: ours minus the mean of eos / n.
    expected = s["naive_entropy"] - np.mean([e / n for e, n in zip(eos, lengths)])
    assert s["polygraph_MonteCarloNormalizedSequenceEntropy"] == pytest.approx(expected, abs=TOL)
    if not any(a.ends_with_eos for a in record.samples):
        assert s["polygraph_MonteCarloNormalizedSequenceEntropy"] == pytest.approx(s["naive_entropy"], abs=TOL)


# ------------------------------------------------------------------ semantic entropy


def polygraph_semantic_entropy_by_hand(record, cluster_ids):
    """-mean_i log sum_{j in class(i)} p_j with p_j = exp(sum of token log-probs, EOS included)."""
    sums = np.array([math.fsum(a.token_logprobs) for a in record.samples])
    ids = np.array(cluster_ids)
    class_log_mass = {c: np.logaddexp.reduce(sums[ids == c]) for c in set(cluster_ids)}
    return -np.mean([class_log_mass[c] for c in cluster_ids])


def test_semantic_entropy_is_the_mean_estimate_of_unnormalised_class_mass():
    names = ["semantic_entropy", "discrete_semantic_entropy", polygraph("SemanticEntropy"),
             polygraph("SemanticEntropy:class_probability_estimation=frequency")]
    s = score(WITH_EOS, names)
    ids = ExactJudge().judge(WITH_EOS.question, WITH_EOS.sample_texts).sample_cluster_ids  # [0, 1, 0, 0]
    assert s["polygraph_SemanticEntropy"] == pytest.approx(polygraph_semantic_entropy_by_hand(WITH_EOS, ids), abs=TOL)
    assert abs(s["polygraph_SemanticEntropy"] - s["semantic_entropy"]) > 0.1  # documented difference
    # Frequency classes and the "mean" estimate: exactly our discrete semantic entropy.
    assert s["polygraph_SemanticEntropyEmpirical"] == pytest.approx(s["discrete_semantic_entropy"], abs=TOL)


def test_unnormalised_semantic_entropy_goes_negative_when_samples_repeat():
    record = question([answer("No", [-0.1, -0.01])] * 4)
    s = score(record, ["semantic_entropy", polygraph("SemanticEntropy")])
    assert s["semantic_entropy"] == 0.0
    assert s["polygraph_SemanticEntropy"] == pytest.approx(-math.log(4 * math.exp(-0.11)), abs=TOL)  # < 0


def test_eos_only_samples_are_dropped_before_lm_polygraph_sees_them():
    record = question([answer("Yes", [-1.0, -0.3]), answer("", [-3.0]), answer("No", [-0.5, -0.2]),
                       answer("Yes", [-0.2, -0.1])])
    frequency = polygraph("SemanticEntropy:class_probability_estimation=frequency")
    s = score(record, ["discrete_semantic_entropy", frequency])
    assert s["discrete_semantic_entropy"] == pytest.approx(m.discrete_semantic_entropy([0, 1, 2, 0]), abs=TOL)
    # LM-Polygraph sees three samples: Yes, No, Yes.
    assert s["polygraph_SemanticEntropyEmpirical"] == pytest.approx(m.discrete_semantic_entropy([0, 1, 0]), abs=TOL)


def test_a_question_whose_samples_are_all_eos_stops_sample_estimators_only():
    from semantic_entropy.sampling.generations_io import GenerationsError

    record = question([answer("", [-3.0]), answer("", [-2.5])])
    assert score(record, [polygraph("MaximumSequenceProbability")])["polygraph_MaximumSequenceProbability"] > 0
    with pytest.raises(GenerationsError, match="every sample is only EOS"):
        score(record, [polygraph("SemanticEntropy")])


# ------------------------------------------------------------------ graph measures


NON_TRANSITIVE = {("Yes", "Yes there is"): ENTAILMENT, ("Yes there is", "Yes"): ENTAILMENT,
                  ("Yes there is", "yes."): ENTAILMENT, ("yes.", "Yes there is"): ENTAILMENT,
                  ("Yes", "No"): CONTRADICTION, ("No", "Yes"): CONTRADICTION}


@pytest.mark.parametrize("judge_factory", [ExactJudge, lambda: VerdictJudge(NON_TRANSITIVE)], ids=["exact", "stub"])
def test_spectral_measures_agree_with_ours(judge_factory):
    judge = judge_factory()
    names = ["eigval_laplacian", "degree_matrix", "eccentricity", "num_semantic_sets",
             polygraph("EigValLaplacian"), polygraph("DegMat"), polygraph("Eccentricity"), polygraph("NumSemSets")]
    s = {k.replace(f"_{judge.name}", "").replace("_strict", ""): v for k, v in score(WITH_EOS, names, judge).items()}
    assert s["polygraph_EigValLaplacian_NLI_score_entail"] == pytest.approx(s["eigval_laplacian"], abs=TOL)
    assert s["polygraph_DegMat_NLI_score_entail"] == pytest.approx(s["degree_matrix"], abs=TOL)
    assert s["polygraph_Eccentricity_NLI_score_entail"] == pytest.approx(s["eccentricity"], abs=TOL)
    if judge.name == "exact":  # a transitive relation: the same sets
        assert s["polygraph_NumSemSets"] == s["num_semantic_sets"] == 2
    else:  # connected components merge the chain Yes ~ Yes there is ~ yes.; first representatives do not
        assert (s["polygraph_NumSemSets"], s["num_semantic_sets"]) == (2, 3)


def test_judge_dependent_names_carry_the_judge():
    judge = VerdictJudge(NON_TRANSITIVE)
    judge.question_prefix = False
    assert "polygraph_SemanticEntropy_stub_noquestion" in score(WITH_EOS, [polygraph("SemanticEntropy")], judge)
    assert "polygraph_MaximumSequenceProbability" in score(WITH_EOS, [polygraph("MaximumSequenceProbability")], judge)


def test_luq_label_prob_and_p_true_by_their_formulas():
    judge = VerdictJudge(NON_TRANSITIVE)
    s = score(WITH_EOS, [polygraph("LUQ"), polygraph("LabelProb"), polygraph("PTrue"), "p_true"], judge)
    texts = WITH_EOS.sample_texts
    probs = np.array([[[0, 0, 1.0] if a == b else judge.label_probs("q", [(a, b)])[0] for b in texts] for a in texts])
    similarity = probs[:, :, ENTAILMENT] / (probs[:, :, ENTAILMENT] + probs[:, :, CONTRADICTION])
    off_diagonal_mean = (similarity.sum(1) - np.diag(similarity)) / (len(texts) - 1)
    assert s["polygraph_LUQ_stub"] == pytest.approx(1 - off_diagonal_mean.mean(), abs=TOL)
    classes = judge.judge("q", texts).sample_cluster_ids
    assert s["polygraph_LabelProb_stub"] == pytest.approx(1 - max(np.bincount(classes)) / len(texts), abs=TOL)
    # -log P(True) against our 1 - P(True): the same order, other values.
    assert math.exp(-s["polygraph_PTrue"]) == pytest.approx(1 - s["p_true"], abs=TOL)


def test_lexical_similarity_is_minus_the_mean_rouge_with_stemming():
    s = score(WITH_EOS, ["lexical_similarity_rougeL", polygraph("LexicalSimilarity")])
    assert s["polygraph_LexicalSimilarity_rougeL"] == pytest.approx(s["lexical_similarity_rougeL"] - 1, abs=TOL)
    stems = question([answer("dogs", [-0.1, -0.1]), answer("dog", [-0.1, -0.1])], prompt=OPEN_PROMPT)
    s = score(stems, ["lexical_similarity_rougeL", polygraph("LexicalSimilarity")])
    assert (s["lexical_similarity_rougeL"], s["polygraph_LexicalSimilarity_rougeL"]) == (1.0, -1.0)  # stemmed: equal


@pytest.mark.parametrize("name", [n for n in WIRED_ESTIMATORS if n not in (
    "MaximumSequenceProbability", "Perplexity", "MeanTokenEntropy", "PTrue")])
def test_every_sample_estimator_grows_with_disagreement(name):
    """Higher = more uncertain: four different answers score above four equal ones (same log-probs)."""
    agree = question([answer("dog", [-0.5, -0.1])] * 4, prompt=OPEN_PROMPT)
    differ = question([answer(t, [-0.5, -0.1]) for t in ("dog", "cat", "bird", "fish")], prompt=OPEN_PROMPT)
    (low,) = score(agree, [polygraph(name)]).values()
    (high,) = score(differ, [polygraph(name)]).values()
    if name in ("MonteCarloSequenceEntropy", "MonteCarloNormalizedSequenceEntropy"):
        assert low == pytest.approx(high)  # log-probs only: blind to meaning
    else:
        assert high > low, (name, low, high)


# ------------------------------------------------------------------ the CLI


def write_generations(path, records):
    def raw(a):
        return {"text": a.text, "token_ids": list(range(3, 3 + len(a.token_logprobs))),
                "token_logprobs": list(a.token_logprobs), "token_entropies": list(a.token_entropies),
                "ends_with_eos": a.ends_with_eos}

    lines = [json.dumps({"question_id": r.question_id, "category": r.category, "prompt": r.prompt,
                         "greedy": raw(r.greedy), "samples": [raw(a) for a in r.samples],
                         "first_token": {"yes_mass": r.yes_no_mass[0], "no_mass": r.yes_no_mass[1]}})
             for r in records]
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


RECORDS = [
    question(WITH_EOS.samples, question_id=1, yes_no_mass=(0.81, 0.17)),
    question(WITHOUT_EOS.samples, greedy=WITHOUT_EOS.greedy, question_id=2, yes_no_mass=(0.3, 0.6)),
    question([answer("No", [-0.1, -0.01])] * 4, question_id=3, yes_no_mass=(0.05, 0.9)),
]


def test_cli_writes_polygraph_scores_beside_ours(tmp_path, capsys):
    generations = write_generations(tmp_path / "g.jsonl", RECORDS)
    output = tmp_path / "u.jsonl"
    assert compute_se_main(["--generations-file", generations, "--output-file", str(output), "--measures",
                            "semantic_entropy", "polygraph:SemanticEntropy", "polygraph:EigValLaplacian"]) == 0
    rows = read_jsonl(str(output))
    assert set(rows[0]["scores"]) == {"semantic_entropy", "polygraph_SemanticEntropy",
                                      "polygraph_EigValLaplacian_NLI_score_entail"}
    manifest = json.loads((tmp_path / "u.jsonl.manifest.json").read_text())
    assert manifest["versions"]["lm-polygraph"] == "0.7.0"
    assert manifest["settings"]["measures"][1] == "polygraph_SemanticEntropy"

    assert compute_se_main(["--generations-file", generations, "--output-file", str(tmp_path / "v.jsonl"),
                            "--measures", "polygraph:SAR"]) == 1
    assert "polygraph:SAR is not wired" in capsys.readouterr().err


# ------------------------------------------------------------------ our score inside LM-Polygraph


def test_registry_measure_estimator_loads_through_the_factory():
    estimator = FactoryEstimator()("semantic_entropy.polygraph.estimators", {"measure": "yes_no_entropy"})
    assert isinstance(estimator, Estimator) and isinstance(estimator, pe.RegistryMeasureEstimator)
    assert str(estimator) == "yes_no_entropy" and estimator.stats_dependencies == ["first_token_yes_no_mass"]
    assert estimator.level == "sequence"
    values = estimator({"first_token_yes_no_mass": [(0.6, 0.2), (0.9, 0.0)]})
    np.testing.assert_allclose(values, [m.yes_no_entropy(0.6, 0.2), 0.0], atol=TOL)
    nli = pe.RegistryMeasureEstimator("semantic_entropy", judge="nli", strict=False, question_prefix=False)
    assert str(nli) == "semantic_entropy_nli_nonstrict_noquestion"


def test_ue_manager_replays_generations_with_our_calculator(tmp_path):
    generations = write_generations(tmp_path / "g.jsonl", RECORDS)
    output = tmp_path / "u.jsonl"
    ours = ["yes_no_entropy", "semantic_entropy", "polygraph:SemanticEntropy", "polygraph:DegMat"]
    assert compute_se_main(["--generations-file", generations, "--output-file", str(output), "--measures", *ours]) == 0
    expected = {row["question_id"]: row["scores"] for row in read_jsonl(str(output))}

    factory = FactoryEstimator()
    estimators = [factory("semantic_entropy.polygraph.estimators", {"measure": "yes_no_entropy"}),
                  factory("semantic_entropy.polygraph.estimators", {"measure": "semantic_entropy"}),
                  factory("SemanticEntropy", {}), factory("DegMat", {})]
    container = pe.calculator_container(pe.GenerationsStatCalculator, {"generations_file": generations})
    (calculator,) = FactoryStatCalculator(BuilderEnvironmentStatCalculator(None))([container])
    assert isinstance(calculator, pe.GenerationsStatCalculator)
    manager = UEManager(pe.replay_dataset(generations, batch_size=3), None, estimators,
                        BuilderEnvironmentStatCalculator(None), [container], [], [], [],
                        ignore_exceptions=False, verbose=False)
    manager()
    for name, key in [("yes_no_entropy", "yes_no_entropy"), ("semantic_entropy", "semantic_entropy"),
                      ("SemanticEntropy", "polygraph_SemanticEntropy"),
                      ("DegMat_NLI_score_entail", "polygraph_DegMat_NLI_score_entail")]:
        got = manager.estimations["sequence", name]
        np.testing.assert_allclose(got, [expected[qid][key] for qid in (1, 2, 3)], atol=TOL, err_msg=name)


def test_judgements_made_with_other_settings_are_refused():
    estimator = pe.RegistryMeasureEstimator("semantic_entropy", judge="nli")
    calculator = pe.GenerationsStatCalculator({"1": RECORDS[0]}, ExactJudge())
    with pytest.raises(ValueError, match="judgements were made with"):
        estimator(calculator({}, ["1"]))


def test_first_token_calculator_on_a_tiny_causal_lm():
    import torch
    from lm_polygraph.utils.model import WhiteboxModel
    from transformers import LlamaConfig, LlamaForCausalLM

    from llava.model.tiny import build_tokenizer, prompt_corpus, tiny_text_config
    from semantic_entropy.sampling.answer_tokens import yes_no_token_ids

    prompts = ["USER: Is there a dog? ASSISTANT:", "USER: Is there a red circle in the image? ASSISTANT:"]
    tokenizer = build_tokenizer(prompt_corpus([p.split(": ")[1] for p in prompts]), vocab_size=200)
    tokenizer.pad_token, tokenizer.padding_side = "<unk>", "left"
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**tiny_text_config(len(tokenizer)))).eval()
    masses = pe.FirstTokenYesNoMassCalculator()({}, prompts, WhiteboxModel(model, tokenizer))["first_token_yes_no_mass"]

    yes_ids, no_ids = yes_no_token_ids(tokenizer)
    for prompt, (yes, no) in zip(prompts, masses):  # each prompt alone, unpadded
        with torch.no_grad():
            probs = torch.softmax(model(**tokenizer([prompt], return_tensors="pt")).logits[0, -1], -1)
        assert (yes, no) == pytest.approx((float(probs[yes_ids].sum()), float(probs[no_ids].sum())), abs=1e-5)
    values = pe.RegistryMeasureEstimator()({"first_token_yes_no_mass": masses})
    np.testing.assert_allclose(values, [m.yes_no_entropy(*mass) for mass in masses], atol=TOL)


# ------------------------------------------------------------------ real generations (tiny LLaVA, demo)


def stage1_generations(model_path, question_file, image_folder, tmp_path):
    from semantic_entropy import model_vqa_loader as stage1

    answers = tmp_path / "answers.jsonl"
    stage1.main(["--model-path", str(model_path), "--question-file", str(question_file),
                 "--image-folder", str(image_folder), "--answers-file", str(answers), "--temperature", "0",
                 "--conv-mode", "vicuna_v1", "--device", "cpu", "--max_new_tokens", "5", "--num-samples", "6"])
    return str(tmp_path / "answers.generations.jsonl")


def check_relations_on_generations(generations, tmp_path):
    """Every documented relation, question by question, on real stage-1 generations."""
    output = tmp_path / "u.jsonl"
    names = ["greedy_neg_log_likelihood", "greedy_mean_token_entropy", "naive_entropy", "eigval_laplacian",
             "degree_matrix", "eccentricity", "num_semantic_sets"]
    wired = ["MaximumSequenceProbability", "MeanTokenEntropy", "MonteCarloSequenceEntropy",
             "MonteCarloNormalizedSequenceEntropy", "SemanticEntropy", "EigValLaplacian", "DegMat", "Eccentricity",
             "NumSemSets", "SemanticEntropy:class_probability_estimation=frequency"]
    assert compute_se_main(["--generations-file", generations, "--output-file", str(output), "--measures",
                            *names, *map(polygraph, wired)]) == 0
    rows = {row["question_id"]: row for row in read_jsonl(str(output))}
    for record in iter_generations(generations):
        s = rows[record.question_id]["scores"]
        greedy, kept = record.greedy, kept_sample_indices(record.samples)
        samples = [record.samples[i] for i in kept]
        ids = [rows[record.question_id]["sample_cluster_ids"][i] for i in kept]
        dense = list(dict.fromkeys(ids))
        ids = [dense.index(i) for i in ids]
        assert s["polygraph_MaximumSequenceProbability"] == pytest.approx(-math.fsum(greedy.token_logprobs), abs=TOL)
        assert s["polygraph_MeanTokenEntropy"] == pytest.approx(np.mean(greedy.token_entropies), abs=TOL)
        if not greedy.ends_with_eos:
            assert s["polygraph_MaximumSequenceProbability"] == pytest.approx(s["greedy_neg_log_likelihood"], abs=TOL)
            assert s["polygraph_MeanTokenEntropy"] == pytest.approx(s["greedy_mean_token_entropy"], abs=TOL)
        sums = [math.fsum(a.token_logprobs) for a in samples]
        lengths = [len(a.token_logprobs) - int(a.ends_with_eos) for a in samples]
        assert s["polygraph_MonteCarloSequenceEntropy"] == pytest.approx(-np.mean(sums), abs=TOL)
        assert s["polygraph_MonteCarloNormalizedSequenceEntropy"] == pytest.approx(
            -np.mean([x / n for x, n in zip(sums, lengths)]), abs=TOL)
        kept_record = QuestionGenerations(record.question_id, None, "", None, tuple(samples))
        by_hand = polygraph_semantic_entropy_by_hand(kept_record, ids)
        assert s["polygraph_SemanticEntropy"] == pytest.approx(by_hand, abs=TOL)
        assert s["polygraph_SemanticEntropyEmpirical"] == pytest.approx(m.discrete_semantic_entropy(ids), abs=TOL)
        similarity = m.similarity_from_clusters(ids)
        assert s["polygraph_EigValLaplacian_NLI_score_entail"] == pytest.approx(m.eigval_laplacian(similarity), abs=TOL)
        assert s["polygraph_DegMat_NLI_score_entail"] == pytest.approx(m.degree_matrix(similarity), abs=TOL)
        assert s["polygraph_Eccentricity_NLI_score_entail"] == pytest.approx(m.eccentricity(similarity), abs=TOL)
        assert s["polygraph_NumSemSets"] == m.num_semantic_sets(ids)
        if len(kept) == len(record.samples):  # nothing dropped: the same numbers as ours
            assert s["polygraph_EigValLaplacian_NLI_score_entail"] == pytest.approx(s["eigval_laplacian"], abs=TOL)
            assert s["polygraph_DegMat_NLI_score_entail"] == pytest.approx(s["degree_matrix"], abs=TOL)
            assert s["polygraph_Eccentricity_NLI_score_entail"] == pytest.approx(s["eccentricity"], abs=TOL)
            assert s["polygraph_NumSemSets"] == s["num_semantic_sets"]
        if not any(a.ends_with_eos for a in record.samples):
            assert s["polygraph_MonteCarloNormalizedSequenceEntropy"] == pytest.approx(s["naive_entropy"], abs=TOL)
    return rows


def test_relations_hold_on_tiny_llava_generations(tiny_checkpoints, tmp_path):
    generations = stage1_generations(tiny_checkpoints.original, tiny_checkpoints.question_file,
                                     tiny_checkpoints.images, tmp_path)
    rows = check_relations_on_generations(generations, tmp_path)
    assert len(rows) == 5


def test_relations_hold_on_demo_generations(tmp_path):
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    model = root / "playground" / "models" / "llava-v1.5-shapes-tiny"
    data = root / "playground" / "data" / "eval" / "shapes_pope"
    if not (model / "config.json").exists():
        pytest.skip(f"the demo model {model} is absent")
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join((data / "llava_pope_test.jsonl").read_text().splitlines(keepends=True)[:12]))
    generations = stage1_generations(model, questions, data / "images", tmp_path)
    check_relations_on_generations(generations, tmp_path)


# ------------------------------------------------------------------ method v2 inside LM-Polygraph

METHOD_V2 = ("grounding_disagreement", "counterfactual_disagreement", "prior_vauq")


def _probe_fields(k):
    """A record's method-v2 and baseline-pass fields, different for each k."""
    return {
        "method_probes": {
            "grounding": {"layers": [1, 2], "logit_lens_top": [[-1.0 - k, -2.0 - k], [-0.5, -3.0]],
                          "similarity_top": [[0.9 - 0.2 * k, 0.5 - 0.2 * k], [0.4, 0.1]]},
            "erased": [{"fraction": 0.1, "yes_mass": 0.6 - 0.1 * k, "no_mass": 0.3}],
            "crops": [{"box": [0, 0, 0.5, 0.5], "yes_mass": 0.2 + 0.1 * k, "no_mass": 0.7},
                      {"box": [0.5, 0.5, 1, 1], "yes_mass": 0.5, "no_mass": 0.5 - 0.1 * k}]},
        "baseline_probes": {
            "vauq": {"alpha": 0.6, "entropies": [0.5, 0.1 * k], "masked_entropies": [0.9, 0.3],
                     "no_image_entropies": [0.2, 0.2]},
            "attention_ratio": {"layer_image_shares": [0.1, 0.2], "layers": [0, 1]}, "glsim": None,
            "no_image": {"yes_mass": 0.2 + 0.2 * k, "no_mass": 0.7}, "vl_uncertainty": None}}


def test_ue_manager_computes_the_method_v2_scores_as_stage_2_does(tmp_path, monkeypatch):
    from semantic_entropy.scoring.method_settings import ENVIRONMENT_VARIABLE

    settings = {"fitted_on": "test", "grounding": {"statistic": "logit_lens", "layer": 1, "top_k": 2, "slope": 1.5,
                                                   "intercept": 2.0},
                "counterfactual": {"erase_fraction": 0.1, "weight": 0.5}, "prior_vauq": {"alpha": 0.3, "beta": 0.5}}
    (tmp_path / "s.json").write_text(json.dumps(settings))
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, str(tmp_path / "s.json"))
    generations = write_generations(tmp_path / "g.jsonl", RECORDS)
    lines = [{**json.loads(line), **_probe_fields(k)} for k, line in enumerate(open(generations))]
    (tmp_path / "g.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    output = tmp_path / "u.jsonl"
    assert compute_se_main(["--generations-file", generations, "--output-file", str(output), "--measures",
                            *METHOD_V2]) == 0
    expected = {row["question_id"]: row["scores"] for row in read_jsonl(str(output))}
    assert all(set(METHOD_V2) <= set(scores) for scores in expected.values())

    factory = FactoryEstimator()
    estimators = [factory("semantic_entropy.polygraph.estimators", {"measure": name}) for name in METHOD_V2]
    assert estimators[0].stats_dependencies == ["first_token_yes_no_mass", "llava_greedy", "llava_method_probes"]
    container = pe.calculator_container(pe.GenerationsStatCalculator, {"generations_file": generations})
    manager = UEManager(pe.replay_dataset(generations, batch_size=2), None, estimators,
                        BuilderEnvironmentStatCalculator(None), [container], [], [], [],
                        ignore_exceptions=False, verbose=False)
    manager()
    for name in METHOD_V2:
        np.testing.assert_allclose(manager.estimations["sequence", name], [expected[q][name] for q in (1, 2, 3)],
                                   atol=TOL, err_msg=name)
    # the default estimator is the study's winner (docs/method.md)
    assert pe.RegistryMeasureEstimator().measure.name == pe.DEFAULT_MEASURE
