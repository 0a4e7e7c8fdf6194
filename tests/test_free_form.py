"""Free-form and open-ended question files through the three stages.

POPE without the single-word instruction (`prepare_pope --free-form`), sentence answers read
as eval_pope reads them, LLaVA's open-ended format (question_id, image, text; no labels), and
stage 3's score distributions. End to end on the demo world (its model, images and POPE
files) with tiny local judges, on small question subsets. Nothing here depends on the demo
model's particular outputs: the checks are relations between the stages' files.
"""

import csv
import json
import pathlib

import numpy as np
import pytest

from llava.constants import POPE_ANSWER_SUFFIX
from llava.eval import eval_pope, prepare_pope
from llava.eval.eval_pope import PopeJoinError, evaluate_pope, join_pope, parse_yes_no
from llava.jsonl_io import read_jsonl
from semantic_entropy import compute_se_myself, eval_auroc, model_vqa_loader
from semantic_entropy.demo.tiny_models import save_tiny_nli_model
from semantic_entropy.evaluation.distributions import (NO_CATEGORY, ScoredQuestions, distributions,
                                                       join_unlabelled)
from semantic_entropy.evaluation.joining import ScoreColumn

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEMO_DATA = REPO_ROOT / "playground" / "data" / "eval" / "shapes_pope"
DEMO_MODEL = REPO_ROOT / "playground" / "models" / "llava-v1.5-shapes-tiny"


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def label_records(category):
    return read_jsonl(str(DEMO_DATA / "coco" / f"coco_pope_{category}.json"))


# ------------------------------------------------------------------ prepare_pope --free-form


def test_free_form_questions_are_pope_text_without_the_suffix(tmp_path):
    plain, free = tmp_path / "plain.jsonl", tmp_path / "free.jsonl"
    for path, extra in ((plain, []), (free, ["--free-form"])):
        prepare_pope.main(["--pope-dir", str(DEMO_DATA / "coco"), "--output-file", str(path),
                           "--per-category", "3", "--seed", "1", *extra])
    plain_records, free_records = read_jsonl(str(plain)), read_jsonl(str(free))
    assert len(free_records) == len(plain_records) == 9
    labels = {(c, r["question_id"]): r for c in prepare_pope.POPE_CATEGORIES for r in label_records(c)}
    for p, f in zip(plain_records, free_records):
        assert {k: v for k, v in p.items() if k != "text"} == {k: v for k, v in f.items() if k != "text"}
        assert p["text"] == f["text"] + POPE_ANSWER_SUFFIX
        own_id = f["question_id"] - prepare_pope.CATEGORY_OFFSETS[f["category"]]
        assert f["text"] == labels[f["category"], own_id]["text"]  # POPE's text, verbatim
        assert POPE_ANSWER_SUFFIX.strip() not in f["text"]


# ------------------------------------------------------------------ sentence answers, eval_pope's reading


def test_eval_pope_reads_sentence_answers_against_free_form_questions(tmp_path):
    coco = tmp_path / "coco"
    coco.mkdir()
    texts = ["Is there a dog in the image?", "Is there a cat in the image?", "Is there a car in the image?",
             "Is there a bus in the image?", "Is there a cup in the image?"]
    labels = ["yes", "no", "yes", "no", "yes"]
    write_jsonl(coco / "coco_pope_random.json", [{"question_id": i + 1, "image": f"{i}.jpg", "text": t, "label": lab}
                                                  for i, (t, lab) in enumerate(zip(texts, labels))])
    questions = write_jsonl(tmp_path / "q.jsonl", [{"question_id": 10_000_001 + i, "image": f"{i}.jpg", "text": t,
                                                    "category": "random"} for i, t in enumerate(texts)])
    sentences = [
        "Yes, there is a dog lying on the sofa.",          # yes (right: TP)
        "There is no cat in the image. A cat would be.",  # no (first sentence has "no": TN)
        "I do not see a car, only a road.",               # no: "not" (wrong: FN)
        "Yes. No other vehicles are visible.",             # yes: only the first sentence counts (wrong: FP)
        "A white cup stands on the table.",                # yes: no negation (right: TP)
    ]
    answers = write_jsonl(tmp_path / "a.jsonl", [{"question_id": 10_000_001 + i, "text": s}
                                                 for i, s in enumerate(sentences)])
    records, _ = join_pope(str(coco), questions, answers)
    assert [r.prediction for r in records] == ["yes", "no", "no", "yes", "yes"]
    assert [r.prediction for r in records] == [parse_yes_no(s) for s in sentences]
    metrics = evaluate_pope(records)["random"]
    assert (metrics["tp"], metrics["fp"], metrics["tn"], metrics["fn"]) == (2, 1, 1, 1)
    assert metrics["accuracy"] == pytest.approx(3 / 5) and metrics["precision"] == pytest.approx(2 / 3)
    summary = eval_pope.main(["--annotation-dir", str(coco), "--question-file", questions, "--result-file", answers])
    assert summary["random"]["f1"] == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))


# ------------------------------------------------------------------ stage 3 without labels


def test_distributions_hand_computed_with_shared_edges():
    scored = ScoredQuestions([1, 2, 3, 4], np.array(["a", "a", "b", "b"]),
                             [ScoreColumn("se", "run", "se", np.array([0.0, 1.0, 1.0, 4.0]))])
    report = distributions(scored, bins=2)
    assert list(report) == ["all", "a", "b"]
    assert report["all"]["se"]["histogram"] == {"edges": [0.0, 2.0, 4.0], "counts": [3, 1]}
    assert report["a"]["se"]["histogram"] == {"edges": [0.0, 2.0, 4.0], "counts": [2, 0]}
    assert report["b"]["se"]["histogram"]["counts"] == [1, 1]
    assert (report["a"]["se"]["mean"], report["b"]["se"]["mean"], report["all"]["se"]["mean"]) == (0.5, 2.5, 1.5)
    assert report["b"]["se"]["q50"] == 2.5 and report["all"]["se"]["max"] == 4.0
    alone = distributions(ScoredQuestions([1], np.array([NO_CATEGORY]), [ScoreColumn("x", "r", "x", np.ones(1))]))
    assert list(alone) == ["all"]  # uncategorised questions: no split of their own


def uncertainty(qid, **scores):
    return {"question_id": qid, "category": None, "scores": scores}


def test_unlabelled_join_errors_name_the_ids(tmp_path):
    questions = {1: {"question_id": 1}, 2: {"question_id": 2}, 3: {"question_id": 3}}
    full = {q: uncertainty(q, se=float(q)) for q in questions}
    partial = {1: full[1], 2: full[2]}
    scored = join_unlabelled([("u.jsonl", full)], ["u"], None, questions)
    assert scored.question_ids == [1, 2, 3] and scored.columns[0].values.tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(PopeJoinError, match=r"p\.jsonl: 1 of the question file's question\(s\) without scores: "
                                            r"question_id 3 \(use --allow-partial"):
        join_unlabelled([("p.jsonl", partial)], ["p"], None, questions)
    assert join_unlabelled([("p.jsonl", partial)], ["p"], None, questions, allow_partial=True).question_ids == [1, 2]
    with pytest.raises(PopeJoinError, match=r"x\.jsonl: 1 scored question_id\(s\) not among .* questions: 9"):
        join_unlabelled([("x.jsonl", {**full, 9: uncertainty(9, se=1.0)})], ["x"], None, questions)
    with pytest.raises(ValueError, match=r"measure 'se' is not finite for question_id 2"):
        join_unlabelled([("n.jsonl", {**full, 2: uncertainty(2, se=float("nan"))})], ["n"], None)
    with pytest.raises(ValueError, match=r"m\.jsonl: measure 'other' is missing for question_id 1, 3;"):
        join_unlabelled([("m.jsonl", {1: uncertainty(1), 2: uncertainty(2, other=1.0, se=2.0),
                                      3: uncertainty(3)})], ["m"], ["other"])


def test_eval_auroc_cli_without_labels(tmp_path, capsys):
    questions = write_jsonl(tmp_path / "q.jsonl", [{"question_id": f"v{i}", "image": "x.png", "text": "Describe it.",
                                                    **({"category": "conv"} if i < 2 else {"category": "detail"})}
                                                   for i in range(4)])
    path = write_jsonl(tmp_path / "u.jsonl", [uncertainty(f"v{i}", se=float(i), ne=2.0) for i in range(4)])
    out = tmp_path / "ev"
    assert eval_auroc.main(["--uncertainty-file", path, "--question-file", questions, "--output-dir", str(out),
                            "--bins", "3"]) == 0
    report = json.loads((out / "distributions.json").read_text())
    assert list(report) == ["all", "conv", "detail"]
    assert report["conv"]["se"]["mean"] == 0.5 and report["detail"]["se"]["mean"] == 2.5
    assert report["all"]["ne"]["histogram"]["counts"] == [0, 4, 0]  # a constant: a unit range around it
    for name in ("distributions.csv", "distributions.md", "score_histograms.png", "manifest.json"):
        assert (out / name).exists(), name
    with open(out / "per_question.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))  # the question file's order, each question's split and scores
    assert [(r["question_id"], r["category"], float(r["se"]), float(r["ne"])) for r in rows] == \
        [(f"v{i}", "conv" if i < 2 else "detail", float(i), 2.0) for i in range(4)]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["mode"] == "distributions" and manifest["records"] == 4
    assert "| se | 4 | 1.500 |" in capsys.readouterr().out

    broken = write_jsonl(tmp_path / "b.jsonl", [uncertainty("v0", se=1.0)])
    assert eval_auroc.main(["--uncertainty-file", broken, "--question-file", questions,
                            "--output-dir", str(tmp_path / "e2")]) == 1
    assert "b.jsonl: 3 of the question file's question(s) without scores: question_id 'v1', 'v2', 'v3'" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit):  # labels need the answers and the question file
        eval_auroc.main(["--uncertainty-file", path, "--annotation-dir", str(tmp_path), "--output-dir", str(out)])


# ------------------------------------------------------------------ the demo world, end to end


def stage1(tmp_path, question_file, name, *extra):
    answers = tmp_path / f"{name}.jsonl"
    model_vqa_loader.main(["--model-path", str(DEMO_MODEL), "--question-file", str(question_file),
                           "--image-folder", str(DEMO_DATA / "images"), "--answers-file", str(answers),
                           "--num-samples", "4", "--max-new-tokens", "12", "--device", "cpu", "--batch-size", "4",
                           *extra])
    return answers, tmp_path / f"{name}.generations.jsonl"


def test_free_form_pope_on_the_demo_world_with_an_nli_judge(tmp_path):
    questions = tmp_path / "pope_free.jsonl"
    prepare_pope.main(["--pope-dir", str(DEMO_DATA / "coco"), "--output-file", str(questions),
                       "--per-category", "2", "--seed", "3", "--free-form"])
    answers, generations = stage1(tmp_path, questions, "answers")
    question_records = read_jsonl(str(questions))
    generation_records = read_jsonl(str(generations))
    assert [g["question_id"] for g in generation_records] == [q["question_id"] for q in question_records]
    assert all(g["prompt"] == q["text"] and not g["prompt"].endswith(POPE_ANSWER_SUFFIX)
               for g, q in zip(generation_records, question_records))

    # A judge that finds every pair neutral: strict clusters are the distinct texts.
    judge = save_tiny_nli_model(str(tmp_path / "nli"), {"entailment": 0.2, "neutral": 0.7, "contradiction": 0.1})
    scores = tmp_path / "uncertainty_nli.jsonl"
    assert compute_se_myself.main(["--generations-file", str(generations), "--output-file", str(scores),
                                   "--judge", "nli", "--judge-model", judge, "--device", "cpu"]) == 0
    for g, u in zip(generation_records, read_jsonl(str(scores))):
        texts = [s["text"] for s in g["samples"]]
        assert max(u["sample_cluster_ids"]) + 1 == len(set(texts))
        assert u["scores"]["num_semantic_sets_nli_strict"] == len(set(texts))

    out = tmp_path / "eval"
    assert eval_auroc.main(["--uncertainty-file", str(scores), "--answers-file", str(answers),
                            "--annotation-dir", str(DEMO_DATA / "coco"), "--question-file", str(questions),
                            "--output-dir", str(out), "--bootstrap", "20", "--no-plots", "--print", "none"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # Correctness is eval_pope's reading of the greedy answer against the label.
    records, _ = join_pope(str(DEMO_DATA / "coco"), str(questions), str(answers))
    assert metrics["all"]["n_errors"] == sum(parse_yes_no(r.answer) != r.label for r in records)
    assert "auroc" in metrics["all"]["semantic_entropy_nli_strict"]
    dist = json.loads((out / "distributions.json").read_text())
    values = [u["scores"]["naive_entropy"] for u in read_jsonl(str(scores))]
    assert dist["all"]["naive_entropy"]["mean"] == pytest.approx(np.mean(values))
    assert list(dist) == ["all", "adversarial", "random", "popular"]


def test_open_ended_questions_on_the_demo_world_with_llava_as_the_llm_judge(tmp_path):
    open_ended = [{"question_id": 1, "image": "shapes_test_000000.png", "text": "Describe the image."},
                  {"question_id": 2, "image": "shapes_test_000001.png", "text": "What shapes are in the image?"},
                  {"question_id": 3, "image": "shapes_test_000002.png", "text": "What colour is the largest shape?"}]
    questions = write_jsonl(tmp_path / "open.jsonl", open_ended)
    answers, generations = stage1(tmp_path, questions, "open_answers", "--sampling-temperature", "2.0")
    generation_records = read_jsonl(str(generations))
    assert [g["category"] for g in generation_records] == [None] * 3
    assert [len(g["samples"]) for g in generation_records] == [4] * 3

    # The demo LLaVA folder as the LLM judge: its language model alone, in LLaVA's conversation.
    scores = tmp_path / "uncertainty_llm.jsonl"
    assert compute_se_myself.main(["--generations-file", str(generations), "--output-file", str(scores),
                                   "--judge", "llm", "--judge-model", str(DEMO_MODEL), "--device", "cpu"]) == 0
    manifest = json.loads(pathlib.Path(str(scores) + ".manifest.json").read_text())
    assert manifest["details"]["judge"]["prompt_format"] == "llava_vicuna_v1"
    stats = manifest["details"]["judge_cache"]
    distinct = [len(set([*(s["text"] for s in g["samples"]), g["greedy"]["text"]])) for g in generation_records]
    assert stats["pairs_judged"] == sum(k * (k - 1) for k in distinct)
    scored = read_jsonl(str(scores))
    assert all("semantic_entropy_llm_strict" in u["scores"] for u in scored)

    out = tmp_path / "eval"
    assert eval_auroc.main(["--uncertainty-file", str(scores), "--question-file", questions,
                            "--answers-file", str(answers), "--output-dir", str(out), "--print", "none"]) == 0
    report = json.loads((out / "distributions.json").read_text())
    assert list(report) == ["all"] and report["all"]["n"] == 3
    for name, summary in report["all"].items():
        if name == "n":
            continue
        values = np.array([u["scores"][name] for u in scored])
        assert summary["mean"] == pytest.approx(values.mean())
        assert summary["min"] <= summary["q25"] <= summary["q50"] <= summary["q75"] <= summary["max"]
        assert sum(summary["histogram"]["counts"]) == 3
    assert not (out / "metrics.json").exists()  # no labels: no AUROC


def test_bad_open_ended_question_files_name_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question_id": 1, "image": "shapes_test_000000.png", "text": "Describe it."}) + "\n"
                   + json.dumps({"question_id": 2, "text": "What is it?"}) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: question lacks field 'image'"):
        stage1(tmp_path, bad, "bad_answers")
    scores = write_jsonl(tmp_path / "u.jsonl", [uncertainty(1, se=1.0)])
    duplicate = tmp_path / "dup.jsonl"
    duplicate.write_text(json.dumps({"question_id": 1, "image": "a.png", "text": "x"}) + "\n"
                         + json.dumps({"question_id": 1, "image": "b.png", "text": "y"}) + "\n")
    assert eval_auroc.main(["--uncertainty-file", scores, "--question-file", str(duplicate),
                            "--output-dir", str(tmp_path / "e")]) == 1
    assert "dup.jsonl:2: duplicate question_id 1 (first on line 1)" in capsys.readouterr().err
