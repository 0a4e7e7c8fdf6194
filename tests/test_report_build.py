"""semantic_entropy.report without a browser: finding a run's files, the embedded data, escaping, errors, maps."""

import base64
import csv
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from scripts.bench_report import write_synthetic_run
from semantic_entropy.attention.stats import Aggregation, image_map
from semantic_entropy.browser.attention_data import attention_data
from semantic_entropy.browser.build import ReportOptions, build_report
from semantic_entropy.browser.run_files import find_run_files

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOSTILE = '</script><img src=x onerror="window.pwned=1"><!-- & "quotes"'
SMALL_RUN = {"adversarial": 3, "random": 2, "popular": 3}  # images per split, 6 questions each: 48 questions


def hostile_text(i):
    return f"Is there a {HOSTILE} in the image?" if i == 0 else None


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_synthetic_run(str(tmp_path_factory.mktemp("synthetic")), images=SMALL_RUN, samples=4,
                               question_text=hostile_text, bootstrap=20)


def embedded_data(page: str) -> dict:
    block = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S).group(1)
    return json.loads(block)


def per_question(eval_dir):
    with open(os.path.join(eval_dir, "per_question.csv"), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def copy_run(run, destination):
    """A copy of the run folder whose manifests name the copy's files, as if the run had been made there."""
    shutil.copytree(run["run_dir"], destination)
    for folder, _, names in os.walk(destination):
        for name in names:
            if name.endswith("manifest.json"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    text = f.read()
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text.replace(run["run_dir"], str(destination)))
    return destination


def build(run, tmp_path, **options):
    output = str(tmp_path / "report.html")
    options = {"image_folder": run["image_dir"], "tokenizer": "none", **options}
    result = build_report(ReportOptions(run_dir=run["run_dir"], output=output, **options))
    with open(output, encoding="utf-8") as f:
        return result, f.read()


def test_finds_the_files_of_pope_se_layout(run):
    files = find_run_files(run["run_dir"])
    assert files.eval_dir == os.path.join(run["run_dir"], "eval_exact")
    assert files.uncertainty == [("uncertainty_exact", os.path.join(run["run_dir"], "uncertainty_exact.jsonl"))]
    assert files.generations == os.path.join(run["run_dir"], "generations.jsonl")
    assert files.manifests[-1] == os.path.join(files.eval_dir, "manifest.json")


def test_page_embeds_every_question_and_score_of_per_question_csv(run, tmp_path):
    result, page = build(run, tmp_path)
    rows = per_question(run["eval_dir"])
    data = embedded_data(page)
    table = data["questions"]["rows"]
    assert result["questions"] == len(rows) == len(table["id"]) == 48
    assert table["id"] == [r["question_id"] for r in rows]
    assert table["wrong"] == [int(r["is_false"]) for r in rows]
    keys = data["questions"]["scoreKeys"]
    assert keys[0] == "semantic_entropy" and len(keys) == 12
    assert table["scores"][keys.index("naive_entropy")] == [float(r["naive_entropy"]) for r in rows]
    assert len(data["images"]) == 3 and all(v["src"].startswith("data:image/jpeg;base64,") for v in data["images"].values())
    assert data["images"]["synthetic_000000.jpg"]["side"] == 640 and data["images"]["synthetic_000000.jpg"]["dy"] == 80
    assert set(data["summary"]["report"]) >= {"adversarial", "random", "popular", "all"}
    with open(str(tmp_path / "report.html") + ".manifest.json", encoding="utf-8") as f:
        manifest = json.load(f)
    assert manifest["tool"] == "semantic_entropy.report" and manifest["status"] == "complete"
    assert manifest["records"] == 48 and "generations_file" in manifest["inputs"]


def test_user_text_cannot_leave_the_data_block(run, tmp_path):
    _, page = build(run, tmp_path)
    assert HOSTILE not in page and "<img" not in page and page.count("</script>") == 2
    data = embedded_data(page)
    assert data["questions"]["rows"]["question"][0] == f"Is there a {HOSTILE} in the image?"
    assert HOSTILE in data["questions"]["details"][0]["prompt"]



def test_page_loads_nothing_from_elsewhere(run, tmp_path):
    _, page = build(run, tmp_path)
    assert "content=\"default-src 'none'; img-src data: file: 'self';" in page
    assert not re.search(r"<script[^>]*\bsrc=|<link\b|@import|url\(|fetch\(|XMLHttpRequest|https://", page)


def test_a_moved_run_folder_reads_its_own_copies(run, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(os.path.dirname(run["run_dir"]), moved, ignore=shutil.ignore_patterns("images", "coco"))
    run_dir = moved / os.path.basename(run["run_dir"])
    files = find_run_files(str(run_dir))
    assert files.uncertainty[0][1] == str(run_dir / "uncertainty_exact.jsonl")
    assert files.generations == str(run_dir / "generations.jsonl")


@pytest.mark.parametrize("remove, message", [
    ("eval_exact", "missing evaluation folder: {run}/eval_<judge>"),
    ("eval_exact/per_question.csv", "missing per-question table (stage 3): {run}/eval_exact/per_question.csv"),
    ("eval_exact/metrics.json", "missing metrics (stage 3): {run}/eval_exact/metrics.json"),
    ("generations.jsonl", "missing generations file (stage 1): {run}/generations.jsonl"),
    ("uncertainty_exact.jsonl", "missing uncertainty file (stage 2): {run}/uncertainty_exact.jsonl"),
])
def test_a_missing_file_is_a_one_line_error_naming_it(run, tmp_path, remove, message):
    copy = copy_run(run, tmp_path / "run")
    target = copy / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(ValueError) as error:
        find_run_files(str(copy))
    assert str(error.value).startswith(message.format(run=copy))


def test_several_evaluations_ask_for_eval_dir(run, tmp_path):
    copy = copy_run(run, tmp_path / "run")
    shutil.copytree(copy / "eval_exact", copy / "eval_nli")
    with pytest.raises(ValueError, match="several evaluations .*eval_exact, eval_nli.*--eval-dir"):
        find_run_files(str(copy))
    assert find_run_files(str(copy), eval_dir=str(copy / "eval_nli")).eval_dir == str(copy / "eval_nli")


def test_command_line_errors_are_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "semantic_entropy.report", "--run-dir", str(tmp_path)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: missing evaluation folder: {tmp_path}/eval_<judge> " \
                                    "(stage 3, semantic_entropy.eval_auroc --output-dir)"


def test_command_writes_the_page_and_says_where(run, tmp_path):
    output = tmp_path / "page.html"
    result = subprocess.run([sys.executable, "-m", "semantic_entropy.report", "--run-dir", run["run_dir"],
                             "--image-folder", run["image_dir"], "--tokenizer", "none", "--output", str(output)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith(f"wrote {output}: 48 questions")
    assert output.exists() and (tmp_path / "page.html.manifest.json").exists()


def test_missing_images_are_a_note_not_an_error(run, tmp_path):
    result, page = build(run, tmp_path, image_folder=str(tmp_path / "nowhere"))
    assert embedded_data(page)["images"] == {}
    assert result["notes"] == [(f"3 of 3 images not found under {tmp_path / 'nowhere'} (first: synthetic_000000.jpg); "
                                "pass --image-folder")]


def test_attention_maps_are_aggregated_as_the_attention_tool_does(tmp_path):
    # One question, 2 answer tokens (the second EOS), 3 layers, 2 heads, 576 image positions.
    rng = np.random.default_rng(0)
    image = rng.random((2, 3, 2, 576)).astype(np.float32)
    maps = tmp_path / "maps"
    maps.mkdir()
    np.savez_compressed(maps / "q7.npz", image_head_mean=image.mean(axis=2), image_head_max=image.max(axis=2))
    row = {"question_id": 7, "width": 300, "height": 200, "num_layers": 3, "tokens_aggregated": [0],
           "aggregation": "heads=max, layers=1-2", "hottest_row": 0, "hottest_col": 0, "hottest_box": None}
    (tmp_path / "attention_stats.jsonl").write_text(json.dumps(row) + "\n" + json.dumps({**row, "question_id": 8}) + "\n")
    (tmp_path / "attention_stats.jsonl.manifest.json").write_text(
        json.dumps({"format": 1, "settings": {"layers": "1:", "head_reduce": "max"}}))

    data = attention_data(str(tmp_path), ["7"])
    entry = data["byId"]["7"]
    assert data["questions"] == 1 and data["withMaps"] == 1 and data["outsideRun"] == 1
    expected = image_map(image, Aggregation(range(1, 3), "max"), [0])
    levels = np.frombuffer(base64.b64decode(entry["map"]), dtype=np.uint8)
    assert entry["grid"] == 24 and entry["mapTop"] == pytest.approx(expected.max() / expected.sum())
    np.testing.assert_allclose(levels / 255 * entry["mapTop"], expected / expected.sum(), atol=entry["mapTop"] / 510)
    assert entry["geometry"] == {"width": 300, "height": 200, "side": 300, "dx": 0, "dy": 50}
