"""The greedy answer script: original record format, batching, resumption, bad input."""

import json
import shutil

import pytest

from llava.eval import model_vqa_loader
from llava.jsonl_io import JsonlError, read_jsonl


def _run(tiny, answers, *extra, question_file=None, images=None):
    model_vqa_loader.main([
        "--model-path", str(tiny.original), "--question-file", str(question_file or tiny.question_file),
        "--image-folder", str(images or tiny.images), "--answers-file", str(answers), "--temperature", "0",
        "--conv-mode", "vicuna_v1", "--device", "cpu", "--max_new_tokens", "6", *extra,
    ])  # fmt: skip
    return read_jsonl(str(answers))


def test_records_in_the_original_format(tiny_checkpoints, tmp_path):
    records = _run(tiny_checkpoints, tmp_path / "a.jsonl")
    questions = read_jsonl(str(tiny_checkpoints.question_file))
    assert [r["question_id"] for r in records] == [q["question_id"] for q in questions]
    first = records[0]
    assert list(first) == ["question_id", "prompt", "text", "answer_id", "model_id", "metadata"]
    assert first["prompt"] == questions[0]["text"]
    assert first["model_id"] == "llava-tiny" and first["metadata"] == {}
    assert len(first["answer_id"]) == 22 and len({r["answer_id"] for r in records}) == len(records)
    assert (tmp_path / "a.jsonl.manifest.json").exists()


def test_batched_greedy_equals_batch_size_one(tiny_checkpoints, tmp_path):
    one = _run(tiny_checkpoints, tmp_path / "bs1.jsonl", "--batch-size", "1")
    four = _run(tiny_checkpoints, tmp_path / "bs4.jsonl", "--batch-size", "4")
    assert [r["text"] for r in one] == [r["text"] for r in four]
    assert len({r["text"] for r in one}) > 1  # different images give different answers


def test_hf_layout_writes_the_same_answers(tiny_checkpoints, tmp_path):
    original = _run(tiny_checkpoints, tmp_path / "o.jsonl")
    model_vqa_loader.main([
        "--model-path", str(tiny_checkpoints.hf), "--question-file", str(tiny_checkpoints.question_file),
        "--image-folder", str(tiny_checkpoints.images), "--answers-file", str(tmp_path / "h.jsonl"),
        "--temperature", "0", "--conv-mode", "vicuna_v1", "--device", "cpu", "--max_new_tokens", "6",
        "--batch-size", "3",
    ])  # fmt: skip
    assert [r["text"] for r in original] == [r["text"] for r in read_jsonl(str(tmp_path / "h.jsonl"))]


def test_resumption_writes_each_question_once(tiny_checkpoints, tmp_path):
    full = _run(tiny_checkpoints, tmp_path / "full.jsonl")
    answers = tmp_path / "resumed.jsonl"
    lines = (tmp_path / "full.jsonl").read_text().splitlines(keepends=True)
    # Two finished records and half of a third, as a crash mid-write leaves them.
    answers.write_text(lines[0] + lines[1] + lines[2][: len(lines[2]) // 2])
    shutil.copy(tmp_path / "full.jsonl.manifest.json", tmp_path / "resumed.jsonl.manifest.json")
    resumed = _run(tiny_checkpoints, answers)
    assert [r["question_id"] for r in resumed] == [r["question_id"] for r in full]
    assert [r["text"] for r in resumed] == [r["text"] for r in full]
    assert resumed[:2] == full[:2]  # kept, not rewritten
    again = _run(tiny_checkpoints, answers)
    assert again == resumed


def test_chunks_split_like_the_original(tiny_checkpoints, tmp_path):
    first = _run(tiny_checkpoints, tmp_path / "c0.jsonl", "--num-chunks", "2", "--chunk-idx", "0")
    second = _run(tiny_checkpoints, tmp_path / "c1.jsonl", "--num-chunks", "2", "--chunk-idx", "1")
    assert [r["question_id"] for r in first] == [100, 101, 102]  # ceil(5 / 2) = 3
    assert [r["question_id"] for r in second] == [103, 104]


def test_sampling_is_seeded_per_question(tiny_checkpoints, tmp_path):
    a = _run(tiny_checkpoints, tmp_path / "s1.jsonl", "--temperature", "1.0", "--batch-size", "1", "--seed", "3")
    b = _run(tiny_checkpoints, tmp_path / "s4.jsonl", "--temperature", "1.0", "--batch-size", "4", "--seed", "3")
    assert [r["text"] for r in a] == [r["text"] for r in b]


def _questions_with(tmp_path, tiny, transform):
    lines = tiny.question_file.read_text().splitlines()
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(transform(lines)) + "\n")
    return path


def test_missing_image_names_file_and_question_id_and_keeps_work(tiny_checkpoints, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(tiny_checkpoints.images, images)
    (images / "img_3.png").unlink()
    answers = tmp_path / "a.jsonl"
    with pytest.raises(FileNotFoundError, match=r"img_3\.png of question_id 103"):
        _run(tiny_checkpoints, answers, images=images)
    assert [r["question_id"] for r in read_jsonl(str(answers))] == [100, 101, 102]


def test_corrupt_image_names_file_and_question_id(tiny_checkpoints, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(tiny_checkpoints.images, images)
    (images / "img_0.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"img_0\.png of question_id 100 cannot be read"):
        _run(tiny_checkpoints, tmp_path / "a.jsonl", images=images)


def test_malformed_line_and_duplicate_id_name_the_line(tiny_checkpoints, tmp_path):
    broken = _questions_with(tmp_path, tiny_checkpoints, lambda ls: ls[:2] + ['{"question_id": 7,'] + ls[2:])
    with pytest.raises(JsonlError, match=r"q\.jsonl:3: not valid JSON"):
        _run(tiny_checkpoints, tmp_path / "a.jsonl", question_file=broken)
    duplicate = _questions_with(tmp_path, tiny_checkpoints, lambda ls: ls + [ls[1]])
    with pytest.raises(JsonlError, match=r"q\.jsonl:6: duplicate question_id 101 \(first on line 2\)"):
        _run(tiny_checkpoints, tmp_path / "a.jsonl", question_file=duplicate)
    missing = _questions_with(tmp_path, tiny_checkpoints, lambda ls: [json.dumps({"question_id": 1, "text": "x"})])
    with pytest.raises(JsonlError, match=r"q\.jsonl:1: question lacks field 'image'"):
        _run(tiny_checkpoints, tmp_path / "a.jsonl", question_file=missing)
