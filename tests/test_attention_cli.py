"""`python -m semantic_entropy.visualize_attention`: PNGs, one self-contained HTML page per question, the table."""

import csv
import json
import pathlib

import pytest

from llava.jsonl_io import read_jsonl
from semantic_entropy import visualize_attention

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHAPES = REPO_ROOT / "playground" / "data" / "eval" / "shapes_pope"
DEMO_MODEL = REPO_ROOT / "playground" / "models" / "llava-v1.5-shapes-tiny"
DEMO_CLIP = REPO_ROOT / "playground" / "models" / "clip-vit-shapes-tiny"


def model_flags(tiny_checkpoints):
    return ["--model-path", str(tiny_checkpoints.original), "--device", "cpu", "--max-new-tokens", "3"]


def test_batch_mode_writes_pages_pngs_and_table(tiny_checkpoints, tmp_path):
    questions = read_jsonl(str(tiny_checkpoints.question_file))
    generations = tmp_path / "generations.jsonl"
    generations.write_text("".join(json.dumps({
        "question_id": q["question_id"], "category": q["category"], "prompt": q["text"],
        "greedy": {"text": "Yes"}, "samples": [{"text": "Yes"}, {"text": f"No sample {q['question_id']}"}],
    }) + "\n" for q in questions))
    uncertainty = tmp_path / "uncertainty.jsonl"
    uncertainty.write_text("".join(json.dumps({
        "question_id": q["question_id"], "category": q["category"], "clusters": [],
        "scores": {"semantic_entropy": 0.25 + q["question_id"]},
    }) + "\n" for q in questions))
    out = tmp_path / "attention"
    summary = visualize_attention.main(model_flags(tiny_checkpoints) + [
        "--question-file", str(tiny_checkpoints.question_file), "--image-folder", str(tiny_checkpoints.images),
        "--output-dir", str(out), "--layers", "1:2", "--head-reduce", "max", "--batch-size", "2",
        "--generations-file", str(generations), "--uncertainty-file", str(uncertainty), "--save-maps",
        "--max-pages", "2"])
    assert summary["questions"] == len(questions)

    rows = read_jsonl(str(out / "attention_stats.jsonl"))
    assert [r["question_id"] for r in rows] == [q["question_id"] for q in questions]
    for index, row in enumerate(rows):
        assert row["aggregation"] == "heads=max, layers=1-1"
        assert len(row["visual_ratio"]) == 2  # every layer of the tiny model
        assert 0 <= row["hottest_row"] < 24 and 0 <= row["hottest_col"] < 24
        assert row["map_entropy"] >= 0
        shares = [row[f"{n}_share"] for n in ("bos", "system", "image", "question", "answer")]
        assert sum(shares) == pytest.approx(1, abs=1e-5)
        name = row["question_id"]
        assert (out / "maps" / f"q{name}.npz").exists()
        if index >= 2:  # --max-pages 2: the table only
            assert not (out / "pages" / f"q{name}.html").exists()
            continue
        page = (out / "pages" / f"q{name}.html").read_text()
        assert page.count("data:image/png;base64,") == 3
        assert f"No sample {name}" in page and "semantic_entropy" in page and "heads=max, layers=1-1" in page
        assert "src=\"http" not in page  # self-contained
        assert len(list((out / "png").glob(f"q{name}_*.png"))) == 3
    with open(out / "attention_stats.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(questions)
    assert {"visual_ratio_L00", "visual_ratio_L01", "hottest_box_x0", "map_entropy", "image_share"} <= set(table[0])
    assert (out / "index.html").exists() and (out / "attention_stats.jsonl.manifest.json").exists()

    # Rerun: every question is already in the table, nothing is redone.
    again = visualize_attention.main(model_flags(tiny_checkpoints) + [
        "--question-file", str(tiny_checkpoints.question_file), "--image-folder", str(tiny_checkpoints.images),
        "--output-dir", str(out), "--layers", "1:2", "--head-reduce", "max"])
    assert again["questions"] == 0
    assert len(read_jsonl(str(out / "attention_stats.jsonl"))) == len(questions)


def test_single_question_mode(tiny_checkpoints, tmp_path):
    out = tmp_path / "one"
    visualize_attention.main(model_flags(tiny_checkpoints) + [
        "--image-file", str(tiny_checkpoints.images / "img_1.png"), "--question", "Is there a dog in the image?",
        "--output-dir", str(out), "--smooth"])
    [row] = read_jsonl(str(out / "attention_stats.jsonl"))
    assert row["question_id"] == "single" and (row["width"], row["height"]) == (180, 260)
    assert "data:image/png;base64," in (out / "pages" / "qsingle.html").read_text()


def test_missing_side_file_records_are_named(tiny_checkpoints, tmp_path):
    uncertainty = tmp_path / "uncertainty.jsonl"
    uncertainty.write_text(json.dumps({"question_id": 100, "scores": {}}) + "\n")
    with pytest.raises(ValueError, match=r"101"):
        visualize_attention.main(model_flags(tiny_checkpoints) + [
            "--question-file", str(tiny_checkpoints.question_file), "--image-folder", str(tiny_checkpoints.images),
            "--output-dir", str(tmp_path / "x"), "--uncertainty-file", str(uncertainty)])


def pointing_run(flags, tmp_path, limit):
    out = tmp_path / "pointing"
    summary = visualize_attention.main(flags + [
        "--question-file", str(SHAPES / "llava_pope_test.jsonl"), "--image-folder", str(SHAPES / "images"),
        "--output-dir", str(out), "--limit", str(limit), "--max-pages", "1",
        "--pointing-game", str(SHAPES / "metadata.json"), "--batch-size", "4"])
    game = summary["pointing_game"]
    assert json.loads((out / "pointing_game.json").read_text())["trials"] == game["trials"]
    return game


@pytest.mark.skipif(not (SHAPES / "metadata.json").exists(), reason="ShapesPOPE demo data absent")
def test_pointing_game_runs_on_shapes_pope(tiny_checkpoints, tmp_path):
    game = pointing_run(model_flags(tiny_checkpoints), tmp_path, limit=12)
    assert game["trials"] > 0
    assert 0.0 <= game["score"] <= 1.0 and 0.0 <= game["chance"] <= 1.0


@pytest.mark.skipif(not (DEMO_MODEL / "config.json").exists() or not (SHAPES / "metadata.json").exists(),
                    reason="demo model playground/models/llava-v1.5-shapes-tiny absent")
def test_pointing_game_of_the_demo_model(tmp_path):
    flags = ["--model-path", str(DEMO_MODEL), "--device", "cpu", "--max-new-tokens", "3"]
    if DEMO_CLIP.is_dir():
        flags += ["--vision-tower", str(DEMO_CLIP)]
    game = pointing_run(flags, tmp_path, limit=60)
    assert game["trials"] > 0
    assert 0.0 <= game["score"] <= 1.0 and 0.0 <= game["chance"] <= 1.0
