"""prepare_pope: LLaVA's llava_pope_test.jsonl from the POPE commit e3e3926 label files."""

import json

import pytest

from llava.constants import POPE_ANSWER_SUFFIX
from llava.eval import prepare_pope
from llava.eval.eval_pope import evaluate_pope, join_pope
from llava.eval.prepare_pope import CATEGORY_OFFSETS, POPE_CATEGORIES, prepare_pope_questions

# The first line of LLaVA's own llava_pope_test.jsonl.
LLAVA_FIRST_LINE = (
    '{"question_id": 1, "image": "COCO_val2014_000000310196.jpg", "text": "Is there a snowboard in the '
    'image?\\nAnswer the question using a single word or phrase.", "category": "adversarial"}'
)


@pytest.fixture(scope="module")
def full_questions(pope_coco_dir):
    return prepare_pope_questions(pope_coco_dir)


def read_labels(pope_dir, category):
    with open(pope_dir / f"coco_pope_{category}.json") as f:
        return [json.loads(line) for line in f if line.strip()]


def ids_of(questions, category):
    return [q["question_id"] for q in questions if q["category"] == category]


def test_constants():
    assert POPE_CATEGORIES == ("adversarial", "random", "popular")
    assert CATEGORY_OFFSETS == {"adversarial": 0, "random": 10_000_000, "popular": 20_000_000}


def test_counts_ids_and_order(full_questions):
    assert len(full_questions) == 8910
    assert ids_of(full_questions, "adversarial") == list(range(1, 3001))
    assert ids_of(full_questions, "random") == list(range(10_000_001, 10_002_911))
    assert ids_of(full_questions, "popular") == list(range(20_000_001, 20_003_001))
    # The splits follow each other in LLaVA's order, never interleaved.
    categories = [q["category"] for q in full_questions]
    assert categories == ["adversarial"] * 3000 + ["random"] * 2910 + ["popular"] * 3000
    assert full_questions[0]["question_id"] == 1
    assert full_questions[-1]["question_id"] == 20_003_000


def test_records_match_label_files(pope_coco_dir, full_questions):
    for category in POPE_CATEGORIES:
        labels = read_labels(pope_coco_dir, category)
        questions = [q for q in full_questions if q["category"] == category]
        assert len(questions) == len(labels)
        for question, label in zip(questions, labels):
            assert question["question_id"] == label["question_id"] + CATEGORY_OFFSETS[category]
            assert question["image"] == label["image"]
            assert question["text"] == label["text"] + POPE_ANSWER_SUFFIX


def test_typo_imange_kept(pope_coco_dir, full_questions):
    raw = sum(label["text"].count("imange") for c in POPE_CATEGORIES for label in read_labels(pope_coco_dir, c))
    if raw == 0:
        pytest.skip("these POPE files have no 'imange' typo")
    assert sum(q["text"].count("imange") for q in full_questions) == raw
    assert any(q["text"] == "Is there an umbrella in the imange?" + POPE_ANSWER_SUFFIX for q in full_questions)


def test_cli_writes_llava_lines(pope_coco_dir, tmp_path):
    out = tmp_path / "sub" / "llava_pope_test.jsonl"
    prepare_pope.main(["--pope-dir", str(pope_coco_dir), "--output-file", str(out)])
    lines = out.read_text().splitlines()
    assert len(lines) == 8910
    assert lines[0] == LLAVA_FIRST_LINE
    for line in (lines[0], lines[3000], lines[-1]):
        assert list(json.loads(line)) == ["question_id", "image", "text", "category"]
    assert json.loads(lines[3000])["question_id"] == 10_000_001
    assert json.loads(lines[-1]) == {
        "question_id": 20_003_000,
        "image": json.loads(lines[-1])["image"],
        "text": read_labels(pope_coco_dir, "popular")[-1]["text"] + POPE_ANSWER_SUFFIX,
        "category": "popular",
    }


def test_subset_reproducible_and_joinable(pope_coco_dir, full_questions, tmp_path):
    first = prepare_pope_questions(pope_coco_dir, per_category=40, seed=3)
    again = prepare_pope_questions(pope_coco_dir, per_category=40, seed=3)
    other = prepare_pope_questions(pope_coco_dir, per_category=40, seed=4)
    assert first == again
    assert [q["question_id"] for q in first] != [q["question_id"] for q in other]
    assert len(first) == 120

    full_by_id = {q["question_id"]: q for q in full_questions}
    for category in POPE_CATEGORIES:
        ids = ids_of(first, category)
        assert len(ids) == 40
        assert ids == sorted(ids)
    assert [q["category"] for q in first] == [c for c in POPE_CATEGORIES for _ in range(40)]
    # Original ids kept, records identical to the full file's.
    for question in first:
        assert full_by_id[question["question_id"]] == question

    # The subset still joins its labels by id.
    question_file = tmp_path / "subset.jsonl"
    question_file.write_text("".join(json.dumps(q) + "\n" for q in first))
    answers = [{"question_id": q["question_id"], "text": "Yes"} for q in first]
    records, coverage = join_pope(pope_coco_dir, question_file, answers)
    assert coverage == {c: {"answered": 40, "total": 40} for c in POPE_CATEGORIES}
    labels = {c: {r["question_id"]: r["label"] for r in read_labels(pope_coco_dir, c)} for c in POPE_CATEGORIES}
    for record in records:
        assert record.label == labels[record.category][record.question_id - CATEGORY_OFFSETS[record.category]]


def test_subset_larger_than_split_keeps_all(pope_coco_dir):
    questions = prepare_pope_questions(pope_coco_dir, per_category=5000, seed=0)
    assert len(questions) == 8910


def test_full_file_joins_labels(pope_coco_dir, full_questions, tmp_path):
    question_file = tmp_path / "q.jsonl"
    question_file.write_text("".join(json.dumps(q) + "\n" for q in full_questions))
    answers = [{"question_id": q["question_id"], "text": "Yes"} for q in reversed(full_questions)]
    records, _ = join_pope(pope_coco_dir, question_file, answers)
    results = evaluate_pope(records)
    # POPE's splits are balanced: half the questions per split are "yes".
    assert results["adversarial"]["tp"] == 1500 and results["adversarial"]["fp"] == 1500
    assert results["random"]["tp"] == 1500 and results["random"]["fp"] == 1410
    assert results["popular"]["tp"] == 1500 and results["popular"]["fp"] == 1500


def test_missing_label_file_names_path(tmp_path):
    (tmp_path / "coco_pope_adversarial.json").write_text(
        '{"question_id": 1, "image": "a.jpg", "text": "Is there a dog in the image?", "label": "yes"}\n'
    )
    with pytest.raises(FileNotFoundError, match="coco_pope_random.json"):
        prepare_pope_questions(tmp_path)
