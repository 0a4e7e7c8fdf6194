"""scripts/pope_se.sh end to end: on a tiny random model (always), and on the embedded demo model."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from llava.constants import POPE_ANSWER_SUFFIX
from llava.jsonl_io import read_jsonl

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "pope_se.sh"
DEMO_MODEL = REPO_ROOT / "playground" / "models" / "llava-v1.5-shapes-tiny"


def run_script(tmp_path, **config):
    """Run the script from the repository root with config variables from the environment."""
    env = {**os.environ, "PYTHON": sys.executable, "DEVICE": "cpu", "BATCH_SIZE": "8", **config}
    result = subprocess.run(["bash", str(SCRIPT)], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"pope_se.sh failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def run_dir(output_dir):
    (folder,) = [p for p in pathlib.Path(output_dir).iterdir() if p.is_dir()]
    return folder


def test_tiny_random_model_end_to_end_and_rerun_skips(tiny_checkpoints, tmp_path):
    # POPE labels for the fixture's questions (a "random" split; matched by image and text).
    annotation_dir = tmp_path / "coco"
    annotation_dir.mkdir()
    labels = [{"question_id": i + 1, "image": q["image"], "text": q["text"][: -len(POPE_ANSWER_SUFFIX)],
               "label": "yes" if i % 2 == 0 else "no"}
              for i, q in enumerate(read_jsonl(str(tiny_checkpoints.question_file)))]
    (annotation_dir / "coco_pope_random.json").write_text("".join(json.dumps(r) + "\n" for r in labels))
    config = dict(MODEL_PATH=str(tiny_checkpoints.original), QUESTION_FILE=str(tiny_checkpoints.question_file),
                  ANNOTATION_DIR=str(annotation_dir), IMAGE_FOLDER=str(tiny_checkpoints.images),
                  NUM_SAMPLES="3", BOOTSTRAP="50", OUTPUT_DIR=str(tmp_path / "out"))
    first = run_script(tmp_path, **config)

    folder = run_dir(tmp_path / "out")
    assert folder.name == "questions_n3_t1.0_seed0"
    for name in ("answers.jsonl", "generations.jsonl", "uncertainty_exact.jsonl", "pope_metrics.json",
                 "eval_exact/metrics.md", "eval_exact/metrics.csv", "eval_exact/metrics.json",
                 "eval_exact/manifest.json", "eval_exact/roc_curves.png"):
        assert (folder / name).exists(), name
    generations = read_jsonl(str(folder / "generations.jsonl"))
    assert [len(g["samples"]) for g in generations] == [3] * 5
    assert {g["sampling"]["temperature"] for g in generations} == {1.0}
    report = json.loads((folder / "eval_exact" / "metrics.json").read_text())
    assert list(report)[:2] == ["random", "all"] and report["all"]["n"] == 5  # then the answer-direction splits
    assert "yes_no_entropy" in report["all"]
    # the output ends with the headline table (AUROC all and the split, one line a measure) and the full table's path
    lines = first.stdout.strip().splitlines()
    assert f"full table (paired differences, every split and metric): {folder}/eval_exact/metrics.md" in lines
    # the results page comes last and says where it is
    assert lines[-1].startswith(f"wrote {folder}/report.html: 5 questions")
    assert (folder / "report.html").exists() and (folder / "report.html.manifest.json").exists()
    header = next(i for i, line in enumerate(lines) if line.startswith("AUROC "))
    assert lines[header].split() == ["AUROC", "all"]  # the fixture has no adversarial split
    assert any(line.startswith("yes_no_entropy ") for line in lines[header:])
    assert "| AUROC" not in first.stdout  # the markdown table stays in the file

    again = run_script(tmp_path, **config)
    assert "stage 1: " in again.stdout and "is complete, skipping" in again.stdout
    assert "stage 2: " in again.stdout
    assert len(read_jsonl(str(folder / "generations.jsonl"))) == 5


@pytest.mark.skipif(not (DEMO_MODEL / "config.json").exists(),
                    reason=f"the demo model {DEMO_MODEL.relative_to(REPO_ROOT)} is not trained yet "
                           f"(no config.json); train it with scripts/train_shapes_llava.py")
def test_demo_yes_no_entropy_flags_errors(tmp_path):
    run_script(tmp_path, PER_CATEGORY="40", NUM_SAMPLES="4", BOOTSTRAP="200", OUTPUT_DIR=str(tmp_path / "out"))
    folder = run_dir(tmp_path / "out")
    report = json.loads((folder / "eval_exact" / "metrics.json").read_text())
    assert list(report)[:4] == ["adversarial", "random", "popular", "all"]  # then the answer-direction splits
    assert report["all"]["n"] == 120
    assert report["all"]["yes_no_entropy"]["auroc"]["value"] > 0.5, (folder / "eval_exact" / "metrics.md").read_text()
