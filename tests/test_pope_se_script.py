"""scripts/pope_se.sh end to end: on a tiny random model (always), and on the embedded demo model,
single-word and free-form, with POPE's labels and with an open-ended question file that has none."""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from llava.constants import POPE_ANSWER_SUFFIX
from llava.jsonl_io import read_jsonl
from semantic_entropy.demo.tiny_models import save_tiny_nli_model

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "pope_se.sh"
DEMO_MODEL = REPO_ROOT / "playground" / "models" / "llava-v1.5-shapes-tiny"
DEMO_DATA = REPO_ROOT / "playground" / "data" / "eval" / "shapes_pope"
needs_demo_model = pytest.mark.skipif(not (DEMO_MODEL / "config.json").exists(),
                                      reason=f"the demo model {DEMO_MODEL.relative_to(REPO_ROOT)} is not trained yet "
                                             f"(no config.json); train it with scripts/train_shapes_llava.py")


def script(**config):
    """Run the script from the repository root with config variables from the environment."""
    env = {**os.environ, "PYTHON": sys.executable, "DEVICE": "cpu", "BATCH_SIZE": "8", **config}
    return subprocess.run(["bash", str(SCRIPT)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
                          check=False)


def run_script(tmp_path, **config):
    result = script(**config)
    assert result.returncode == 0, f"pope_se.sh failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def page_mode(page):
    """The evaluation mode the results page was built for, from its embedded data."""
    block = re.search(r'id="report-data">(.*?)</script>', pathlib.Path(page).read_text(encoding="utf-8"), re.DOTALL)
    return json.loads(block.group(1))["mode"]


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


@needs_demo_model
def test_demo_yes_no_entropy_flags_errors(tmp_path):
    run_script(tmp_path, PER_CATEGORY="40", NUM_SAMPLES="4", BOOTSTRAP="200", OUTPUT_DIR=str(tmp_path / "out"))
    folder = run_dir(tmp_path / "out")
    report = json.loads((folder / "eval_exact" / "metrics.json").read_text())
    assert list(report)[:4] == ["adversarial", "random", "popular", "all"]  # then the answer-direction splits
    assert report["all"]["n"] == 120
    assert report["all"]["yes_no_entropy"]["auroc"]["value"] > 0.5, (folder / "eval_exact" / "metrics.md").read_text()


# ------------------------------------------------------------------ free-form answers


@pytest.mark.parametrize("config, message", [
    ({"FREE_FORM": "1"}, "error: FREE_FORM=1 needs a judge of meaning: set JUDGE=nli or JUDGE=llm with JUDGE_MODEL="),
    ({"FREE_FORM": "1", "JUDGE": "exact"}, "error: FREE_FORM=1 needs a judge of meaning: "),
    ({"FREE_FORM": "yes", "JUDGE": "nli"}, "error: FREE_FORM must be 0 or 1, not 'yes'"),
])
def test_free_form_refuses_the_exact_judge_before_doing_anything(tmp_path, config, message):
    result = script(OUTPUT_DIR=str(tmp_path / "out"), **config)
    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith(message)
    assert not (tmp_path / "out").exists()


@needs_demo_model
def test_free_form_pope_on_the_demo_is_evaluated_against_the_labels(tmp_path):
    judge = save_tiny_nli_model(str(tmp_path / "nli"), {"entailment": 0.2, "neutral": 0.7, "contradiction": 0.1})
    result = run_script(tmp_path, FREE_FORM="1", PER_CATEGORY="2", NUM_SAMPLES="3", MAX_NEW_TOKENS="16",
                        BOOTSTRAP="20", JUDGE="nli", JUDGE_MODEL=judge, OUTPUT_DIR=str(tmp_path / "out"))
    folder = run_dir(tmp_path / "out")
    # Its own folder: a single-word run of the same questions is questions_pc2_seed0_n3_t1.0_seed0.
    assert folder.name == "questions_free_pc2_seed0_n3_t1.0_seed0_free_tok16"
    questions = read_jsonl(str(tmp_path / "out" / "questions_free_pc2_seed0.jsonl"))
    assert len(questions) == 6 and not any(q["text"].endswith(POPE_ANSWER_SUFFIX) for q in questions)
    generations = read_jsonl(str(folder / "generations.jsonl"))
    assert [g["prompt"] for g in generations] == [q["text"] for q in questions]
    assert {g["sampling"]["max_new_tokens"] for g in generations} == {16}
    assert [len(g["samples"]) for g in generations] == [3] * 6
    report = json.loads((folder / "eval_nli_nli" / "metrics.json").read_text())  # labels: AUROC and the rest
    assert list(report)[:4] == ["adversarial", "random", "popular", "all"] and report["all"]["n"] == 6
    assert "semantic_entropy_nli_strict" in report["all"] and (folder / "pope_metrics.json").exists()
    assert result.stdout.strip().splitlines()[-1].startswith(f"wrote {folder}/report.html: 6 questions")
    assert page_mode(folder / "report.html") == "labels"


@needs_demo_model
def test_an_open_ended_question_file_gets_the_score_distributions(tmp_path):
    open_ended = [{"question_id": i + 1, "image": f"shapes_test_{i:06d}.png", "text": text}
                  for i, text in enumerate(["Describe the image.", "What shapes are in the image?",
                                            "What colour is the largest shape?"])]
    question_file = tmp_path / "open.jsonl"
    question_file.write_text("".join(json.dumps(q) + "\n" for q in open_ended))
    # LLaVA's own language model as the judge, as the refusal above suggests.
    result = run_script(tmp_path, FREE_FORM="1", QUESTION_FILE=str(question_file), NUM_SAMPLES="3",
                        MAX_NEW_TOKENS="12", JUDGE="llm", JUDGE_MODEL=str(DEMO_MODEL), OUTPUT_DIR=str(tmp_path / "out"))
    folder = run_dir(tmp_path / "out")
    assert folder.name == "open_n3_t1.0_seed0_free_tok12"
    assert f"stage 3: the questions of {question_file} are not POPE's, so there are no labels" in result.stdout
    evaluation = folder / "eval_llm_llava-v1.5-shapes-tiny"
    distributions = json.loads((evaluation / "distributions.json").read_text())
    assert list(distributions) == ["all"] and distributions["all"]["n"] == 3
    assert len(read_jsonl(str(folder / "uncertainty_llm_llava-v1.5-shapes-tiny.jsonl"))) == 3
    assert len((evaluation / "per_question.csv").read_text().splitlines()) == 1 + 3
    assert not (evaluation / "metrics.json").exists() and not (folder / "pope_metrics.json").exists()
    lines = result.stdout.strip().splitlines()
    assert f"full table (every split and statistic): {evaluation}/distributions.md" in lines
    assert lines[-1].startswith(f"wrote {folder}/report.html: 3 questions")
    assert page_mode(folder / "report.html") == "distributions"
