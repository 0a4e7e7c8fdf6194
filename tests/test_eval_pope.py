"""eval_pope: LLaVA's parsing and printout, with every join by id, on handmade files."""

import json
import pathlib
import random
import subprocess
import sys

import pytest

from llava.constants import POPE_ANSWER_SUFFIX
from llava.eval import eval_pope
from llava.eval.eval_pope import (
    PopeJoinError,
    PopeRecord,
    evaluate_pope,
    join_pope,
    parse_yes_no,
    pope_metrics,
)
from llava.jsonl_io import JsonlError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# (split id, image, POPE text, label, answer); the expected outcome is in the comment.
ADVERSARIAL = [
    (1, "a.jpg", "Is there a dog in the image?", "yes", "Yes"),  # TP
    (2, "a.jpg", "Is there a cat in the image?", "no", "No."),  # TN
    (3, "b.jpg", "Is there a car in the image?", "yes", "There is not a car."),  # FN
    (4, "b.jpg", "Is there a bus in the imange?", "no", "Yes, there is a bus"),  # FP
    (5, "c.jpg", "Is there a cup in the image?", "yes", "Nope"),  # TP ("Nope" parses as yes)
    (6, "c.jpg", "Is there a fork in the image?", "no", "no"),  # TN
]
RANDOM = [
    (1, "d.jpg", "Is there a dog in the image?", "yes", "Yes"),  # TP
    (2, "d.jpg", "Is there a cat in the image?", "no", "Yes"),  # FP
    (3, "e.jpg", "Is there a tree in the image?", "yes", "Yes."),  # TP
    (4, "e.jpg", "Is there a kite in the image?", "no", "No, there is no kite."),  # TN
]
OFFSETS = {"adversarial": 0, "random": 10_000_000}
SPLITS = {"adversarial": ADVERSARIAL, "random": RANDOM}

# Counted by hand from the comments above.
EXPECTED = {
    "adversarial": dict(tp=2, fp=1, tn=2, fn=1, accuracy=4 / 6, precision=2 / 3, recall=2 / 3, f1=2 / 3, yes_ratio=0.5),
    "random": dict(tp=2, fp=1, tn=1, fn=0, accuracy=0.75, precision=2 / 3, recall=1.0, f1=0.8, yes_ratio=0.75),
}
EXPECTED_MEAN_F1 = (2 / 3 + 0.8) / 2


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def make_questions(question_ids=None):
    """LLaVA-style questions; `question_ids` renumbers them (a question file made another way)."""
    questions = []
    for category, rows in SPLITS.items():
        for split_id, image, text, _, _ in rows:
            questions.append(
                {
                    "question_id": split_id + OFFSETS[category],
                    "image": image,
                    "text": text + POPE_ANSWER_SUFFIX,
                    "category": category,
                }
            )
    if question_ids is not None:
        for question, qid in zip(questions, question_ids):
            question["question_id"] = qid
    return questions


def make_answers(questions):
    """One answer per question of `make_questions`, whose order it shares, with each row's answer text."""
    texts = [row[4] for rows in SPLITS.values() for row in rows]
    return [
        {"question_id": q["question_id"], "prompt": q["text"], "text": text} for q, text in zip(questions, texts)
    ]


@pytest.fixture
def pope_files(tmp_path):
    annotation_dir = tmp_path / "pope"
    annotation_dir.mkdir()
    for category, rows in SPLITS.items():
        write_jsonl(
            annotation_dir / f"coco_pope_{category}.json",
            [{"question_id": i, "image": im, "text": t, "label": lab} for i, im, t, lab, _ in rows],
        )
    (annotation_dir / "LICENSE").write_text("not a label file\n")
    questions = make_questions()
    question_file = write_jsonl(tmp_path / "questions.jsonl", questions)
    answers = make_answers(questions)
    result_file = write_jsonl(tmp_path / "answers.jsonl", answers)
    return annotation_dir, question_file, result_file, answers


def assert_expected(results):
    assert [k for k in results if k != "mean_f1"] == ["adversarial", "random"]
    for category, expected in EXPECTED.items():
        got = results[category]
        for key in ("tp", "fp", "tn", "fn"):
            assert got[key] == expected[key], (category, key)
        for key in ("accuracy", "precision", "recall", "f1", "yes_ratio"):
            assert got[key] == pytest.approx(expected[key]), (category, key)
    assert results["mean_f1"] == pytest.approx(EXPECTED_MEAN_F1)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("No.", "no"),
        ("No", "no"),
        ("no", "no"),
        ("Yes", "yes"),
        ("Yes, there is", "yes"),
        ("Yes, there is a dog.", "yes"),
        ("There is not a dog", "no"),
        ("Nope", "yes"),  # not one of the words No/not/no
        ("Yes. There is no cat.", "yes"),  # only the first sentence counts
        ("No, there is no kite.", "no"),
        ("NO", "yes"),  # the original parsing is case-sensitive
        ("", "yes"),
    ],
)
def test_parse_yes_no(text, expected):
    assert parse_yes_no(text) == expected


def test_handmade_metrics(pope_files):
    annotation_dir, question_file, result_file, _ = pope_files
    records, coverage = join_pope(annotation_dir, question_file, result_file)
    assert coverage == {"adversarial": {"answered": 6, "total": 6}, "random": {"answered": 4, "total": 4}}
    assert [r.question_id for r in records] == [1, 2, 3, 4, 5, 6, 10_000_001, 10_000_002, 10_000_003, 10_000_004]
    first = records[0]
    assert first == PopeRecord(
        question_id=1,
        category="adversarial",
        image="a.jpg",
        question="Is there a dog in the image?" + POPE_ANSWER_SUFFIX,
        label="yes",
        answer="Yes",
        prediction="yes",
    )
    assert [r.is_correct for r in records[:6]] == [True, True, False, False, True, True]
    assert_expected(evaluate_pope(records))


def test_shuffled_answers_same_metrics(pope_files):
    annotation_dir, question_file, _, answers = pope_files
    shuffled = list(answers)
    random.Random(0).shuffle(shuffled)
    assert shuffled != answers
    records, _ = join_pope(annotation_dir, question_file, shuffled)
    assert [r.question_id for r in records] == [a["question_id"] for a in answers]  # question-file order
    assert_expected(evaluate_pope(records))


def test_question_file_numbered_otherwise_joins_by_content(pope_files, tmp_path):
    annotation_dir, _, _, _ = pope_files
    # Ids 1..10 in order: most map to the wrong split id or none; content decides.
    questions = make_questions(question_ids=list(range(1, 11)))
    question_file = write_jsonl(tmp_path / "renumbered.jsonl", questions)
    answers = make_answers(questions)
    random.Random(1).shuffle(answers)
    records, _ = join_pope(annotation_dir, question_file, answers)
    assert_expected(evaluate_pope(records))


def test_question_without_label_names_id(pope_files, tmp_path):
    annotation_dir, _, _, _ = pope_files
    questions = make_questions()
    questions[2]["text"] = "Is there a zebra in the image?" + POPE_ANSWER_SUFFIX  # id 3 no longer matches
    question_file = write_jsonl(tmp_path / "q.jsonl", questions)
    with pytest.raises(PopeJoinError, match=r"question_id 3 \(adversarial\).*coco_pope_adversarial.json"):
        join_pope(annotation_dir, question_file, make_answers(questions))


def test_ambiguous_content_names_id(pope_files, tmp_path):
    annotation_dir, _, _, _ = pope_files
    rows = [(i, "a.jpg", "Is there a dog in the image?", "yes") for i in (1, 2)]
    write_jsonl(
        annotation_dir / "coco_pope_adversarial.json",
        [{"question_id": i, "image": im, "text": t, "label": lab} for i, im, t, lab in rows],
    )
    question = {"question_id": 77, "image": "a.jpg", "text": rows[0][2] + POPE_ANSWER_SUFFIX, "category": "adversarial"}
    question_file = write_jsonl(tmp_path / "q.jsonl", [question])
    with pytest.raises(PopeJoinError, match="question_id 77.*several"):
        join_pope(annotation_dir, question_file, [{"question_id": 77, "text": "Yes"}])


def test_missing_answers_error_names_ids(pope_files):
    annotation_dir, question_file, _, answers = pope_files
    kept = [a for a in answers if a["question_id"] not in (3, 10_000_004)]
    with pytest.raises(PopeJoinError, match=r"2 question\(s\) without an answer: question_id 3, 10000004"):
        join_pope(annotation_dir, question_file, kept)


def test_extra_answers_error_names_ids(pope_files):
    annotation_dir, question_file, _, answers = pope_files
    extra = answers + [{"question_id": 999, "text": "Yes"}, {"question_id": 10_000_005, "text": "No"}]
    with pytest.raises(PopeJoinError, match="2 answer.*not a question: 999, 10000005"):
        join_pope(annotation_dir, question_file, extra)


def test_many_missing_ids_are_truncated(pope_files):
    annotation_dir, question_file, _, _ = pope_files
    with pytest.raises(PopeJoinError, match=r"10 question\(s\)") as info:
        join_pope(annotation_dir, question_file, [])
    assert "10000004" in str(info.value)


def test_duplicate_answer_names_id_and_line(pope_files, tmp_path):
    annotation_dir, question_file, _, answers = pope_files
    result_file = write_jsonl(tmp_path / "dup.jsonl", answers + [answers[1]])
    with pytest.raises(PopeJoinError, match=r"dup.jsonl:11: duplicate answer for question_id 2 \(first at .*:2\)"):
        join_pope(annotation_dir, question_file, result_file)


def test_answer_without_text_is_an_error(pope_files):
    annotation_dir, question_file, _, answers = pope_files
    broken = [dict(a) for a in answers]
    del broken[4]["text"]
    with pytest.raises(JsonlError, match="answer record 5.*'text'"):
        join_pope(annotation_dir, question_file, broken)


def test_allow_partial_coverage(pope_files):
    annotation_dir, question_file, _, answers = pope_files
    kept = [a for a in answers if a["question_id"] not in (3, 10_000_004)]
    records, coverage = join_pope(annotation_dir, question_file, kept, allow_partial=True)
    assert coverage == {"adversarial": {"answered": 5, "total": 6}, "random": {"answered": 3, "total": 4}}
    results = evaluate_pope(records)
    assert (results["adversarial"]["tp"], results["adversarial"]["fn"]) == (2, 0)
    assert results["random"]["n"] == 3 and results["random"]["tn"] == 0


def test_allow_partial_ignores_extra_with_warning(pope_files):
    annotation_dir, question_file, _, answers = pope_files
    with pytest.warns(UserWarning, match="999"):
        records, _ = join_pope(annotation_dir, question_file, answers + [{"question_id": 999, "text": "No"}], True)
    assert_expected(evaluate_pope(records))


def test_zero_divisions_report_zero():
    empty = pope_metrics([])
    assert empty == {
        "tp": 0, "fp": 0, "tn": 0, "fn": 0, "accuracy": 0.0, "precision": 0.0,
        "recall": 0.0, "f1": 0.0, "yes_ratio": 0.0, "n": 0,
    }  # fmt: skip
    all_no = [PopeRecord(i, "random", "x.jpg", "q", "no", "No", "no") for i in range(3)]
    metrics = pope_metrics(all_no)
    assert (metrics["tn"], metrics["precision"], metrics["recall"], metrics["f1"]) == (3, 0.0, 0.0, 0.0)
    assert metrics["accuracy"] == 1.0
    assert evaluate_pope([]) == {"mean_f1": 0.0}


def test_cli_printout_and_json(pope_files, tmp_path, capsys):
    annotation_dir, question_file, result_file, _ = pope_files
    output_json = tmp_path / "out" / "metrics.json"
    eval_pope.main(
        [
            "--annotation-dir", str(annotation_dir),
            "--question-file", str(question_file),
            "--result-file", str(result_file),
            "--output-json", str(output_json),
        ]
    )  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    adversarial = [
        "Category: adversarial, # samples: 6",
        "TP\tFP\tTN\tFN\t",
        "2\t1\t2\t1",
        f"Accuracy: {4 / 6}",
        f"Precision: {2 / 3}",
        f"Recall: {2 / 3}",
        f"F1 score: {2 * (2 / 3) * (2 / 3) / (4 / 3)}",
        "Yes ratio: 0.5",
        "0.667, 0.667, 0.667, 0.667, 0.500",
        "====================================",
    ]
    assert lines[: len(adversarial)] == adversarial
    random_block = lines[len(adversarial) : 2 * len(adversarial)]
    assert random_block[0] == "Category: random, # samples: 4"
    assert random_block[2] == "2\t1\t1\t0"
    assert random_block[8] == "0.800, 0.750, 0.667, 1.000, 0.750"
    assert lines[-1].startswith("Mean F1 over 2 splits") and lines[-1].endswith("0.733")

    written = json.loads(output_json.read_text())
    assert list(written) == ["adversarial", "random", "mean_f1"]
    assert list(written["adversarial"]) == ["tp", "fp", "tn", "fn", "accuracy", "precision", "recall", "f1", "yes_ratio"]
    assert written["mean_f1"] == pytest.approx(EXPECTED_MEAN_F1)
    assert written["random"]["f1"] == pytest.approx(0.8)


def test_cli_allow_partial_prints_coverage(pope_files, tmp_path, capsys):
    annotation_dir, question_file, _, answers = pope_files
    result_file = write_jsonl(tmp_path / "partial.jsonl", answers[:4])
    args = ["--annotation-dir", str(annotation_dir), "--question-file", str(question_file), "--result-file", str(result_file)]
    with pytest.raises(PopeJoinError, match="6 question"):
        eval_pope.main(args)
    eval_pope.main(args + ["--allow-partial"])
    out = capsys.readouterr().out
    assert "  adversarial: 4/6" in out and "  random: 0/4" in out
    assert "Category: adversarial, # samples: 4" in out
    assert "Category: random" not in out


def test_module_runs_as_script(pope_files):
    annotation_dir, question_file, result_file, _ = pope_files
    completed = subprocess.run(
        [sys.executable, "-m", "llava.eval.eval_pope", "--annotation-dir", str(annotation_dir),
         "--question-file", str(question_file), "--result-file", str(result_file)],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "Category: random, # samples: 4" in completed.stdout
    assert "F1 score: 0.8" in completed.stdout
