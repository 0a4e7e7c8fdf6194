"""The results page in a real headless Chromium (Debian's chromium + chromium-driver), on the demo's run.

The run is scripts/pope_se.sh on the embedded ShapesPOPE demo (10 questions a split, 3 samples),
which ends by writing report.html; the attention page adds visualize_attention's maps for the
first 12 questions. Expected numbers come from the run's own files (per_question.csv,
generations.jsonl, uncertainty_exact.jsonl, attention_stats.jsonl).
"""

import base64
import csv
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from semantic_entropy.browser.headless import CHROMEDRIVER, CHROMIUM, available
from tests.report_page import open_page

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO_ROOT / "playground" / "models" / "llava-v1.5-shapes-tiny"
DEMO_IMAGES = REPO_ROOT / "playground" / "data" / "eval" / "shapes_pope" / "images"
ATTENTION_QUESTIONS = 12

pytestmark = [
    pytest.mark.skipif(not available(), reason=f"the browser tests need {CHROMIUM} and {CHROMEDRIVER} "
                                               "(Debian: apt-get install chromium chromium-driver)"),
    pytest.mark.skipif(not (DEMO_MODEL / "config.json").exists(),
                       reason=f"the demo model {DEMO_MODEL.relative_to(REPO_ROOT)} is not trained yet"),
]


def run_module(*args):
    result = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0, f"{args[:2]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_run")
    env = {**os.environ, "PYTHON": sys.executable, "DEVICE": "cpu", "PER_CATEGORY": "10", "NUM_SAMPLES": "3",
           "BOOTSTRAP": "50", "OUTPUT_DIR": str(out)}
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "pope_se.sh")], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"pope_se.sh failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    assert result.stdout.strip().splitlines()[-1].startswith(f"wrote {run_dir}/report.html: 30 questions")
    attention = out / "attention"
    run_module("-m", "semantic_entropy.visualize_attention", "--model-path", str(DEMO_MODEL),
               "--question-file", str(next(out.glob("questions_pc10_seed0.jsonl"))), "--image-folder", str(DEMO_IMAGES),
               "--output-dir", str(attention), "--limit", str(ATTENTION_QUESTIONS), "--save-maps", "--max-pages", "0",
               "--device", "cpu", "--batch-size", "4")
    run_module("-m", "semantic_entropy.report", "--run-dir", str(run_dir), "--attention-dir", str(attention),
               "--output", str(out / "with_attention.html"))
    with open(run_dir / "eval_exact" / "per_question.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {"run_dir": run_dir, "page": run_dir / "report.html", "attention_page": out / "with_attention.html",
            "attention_dir": attention, "rows": rows}


def row_count(browser):
    return browser.text(browser.find("#row-count"))


def visible_ids(browser):
    return browser.execute("""
        return Array.from(document.querySelectorAll('.vrow')).filter(r => r.style.display !== 'none')
          .sort((a, b) => new DOMMatrix(a.style.transform).f - new DOMMatrix(b.style.transform).f)
          .map(r => r.children[0].textContent);""")


def click_row(browser, question_id):
    browser.execute("""
        var input = document.getElementById('filter-text'); input.value = arguments[0];
        input.dispatchEvent(new Event('input'));""", question_id)
    row = next(r for r in browser.find_all(".vrow") if browser.text(r).split()[0] == question_id)
    browser.click(row)
    browser.wait_for("return document.getElementById('detail-title')")


def severe(entries):
    return [e for e in entries if e.get("level") in ("SEVERE", "WARNING")]


def test_demo_report_loads_and_every_tab_renders_without_console_errors(demo, browser):
    open_page(browser, demo["page"])
    assert row_count(browser) == "30 of 30 questions"
    assert len(visible_ids(browser)) == 30
    browser.click(browser.find_all(".vrow")[3])
    browser.click(browser.find("#tab-summary"))
    assert browser.execute("return document.querySelectorAll('#roc-curve polyline').length") >= 1
    browser.click(browser.find("#tab-settings"))
    settings = browser.text(browser.find("#headline-table"))
    assert str(DEMO_MODEL) in settings and "samples per question 3" in settings and "judge exact" in settings
    assert severe(browser.console()) == []


@pytest.mark.parametrize("split, correctness, direction", [
    ("all", "wrong", "all"), ("adversarial", "all", "all"), ("popular", "right", "yes"), ("random", "wrong", "no"),
])
def test_filters_give_the_counts_of_per_question_csv(demo, browser, split, correctness, direction):
    open_page(browser, demo["page"])
    browser.execute("""
        [['filter-split', arguments[0]], ['filter-correct', arguments[1]], ['filter-direction', arguments[2]]]
          .forEach(function (f) { var s = document.getElementById(f[0]); s.value = f[1];
                                  s.dispatchEvent(new Event('change')); });""", split, correctness, direction)
    expected = [r["question_id"] for r in demo["rows"]
                if split in ("all", r["category"]) and correctness in ("all", "wrong" if r["is_false"] == "1" else "right")
                and direction in ("all", r["prediction"])]
    assert row_count(browser) == f"{len(expected)} of 30 questions"
    assert visible_ids(browser) == expected  # file order until a column is sorted


def test_text_filter_matches_question_text(demo, browser):
    open_page(browser, demo["page"])
    browser.type_text(browser.find("#filter-text"), "RED circle")
    generations = {str(json.loads(line)["question_id"]): json.loads(line)["prompt"]
                   for line in (demo["run_dir"] / "generations.jsonl").read_text().splitlines()}
    expected = [r["question_id"] for r in demo["rows"] if "red circle" in generations[r["question_id"]].lower()]
    assert expected and row_count(browser) == f"{len(expected)} of 30 questions"


def test_sorting_by_a_score_puts_the_extreme_question_first(demo, browser):
    open_page(browser, demo["page"])
    values = [float(r["naive_entropy"]) for r in demo["rows"]]
    header = browser.find('.vhead .cell[data-column="score:naive_entropy"]')
    browser.click(header)  # a score sorts most uncertain first
    assert visible_ids(browser)[0] == demo["rows"][values.index(max(values))]["question_id"]
    browser.click(header)
    assert visible_ids(browser)[0] == demo["rows"][values.index(min(values))]["question_id"]
    column = browser.execute("""return Array.from(document.querySelectorAll('.vhead .cell'))
        .findIndex(c => c.getAttribute('data-column') === 'score:naive_entropy');""")
    shown = [float(v) for v in browser.execute("""
        return Array.from(document.querySelectorAll('.vrow')).filter(r => r.style.display !== 'none')
          .sort((a, b) => new DOMMatrix(a.style.transform).f - new DOMMatrix(b.style.transform).f)
          .map(r => r.children[arguments[0]].textContent);""", column)]
    assert shown == sorted(shown)


def test_selecting_a_row_shows_its_samples_clusters_and_scores(demo, browser):
    open_page(browser, demo["page"])
    generations = {str(g["question_id"]): g for g in map(json.loads, (demo["run_dir"] / "generations.jsonl").open())}
    clusters = {str(u["question_id"]): u for u in map(json.loads, (demo["run_dir"] / "uncertainty_exact.jsonl").open())}
    # A question whose samples split into two clusters, if the demo has one.
    row = next((r for r in demo["rows"] if len(set(clusters[r["question_id"]]["sample_cluster_ids"])) > 1), demo["rows"][0])
    qid = row["question_id"]
    click_row(browser, qid)

    assert browser.text(browser.find("#detail-title")) == f"Question {qid}"
    assert browser.execute("return document.getElementById('detail-prompt').textContent") == generations[qid]["prompt"]
    samples = browser.text(browser.find(".clusters"))
    for sample in generations[qid]["samples"]:
        assert sample["text"] in samples
    for probability in clusters[qid]["cluster_probs"]:
        assert f"p = {probability:.3f}" in samples
    assert "the greedy answer's cluster" in samples

    score_rows = browser.execute("""return Array.from(document.querySelectorAll('#detail-scores tr[data-score]'))
        .map(tr => [tr.getAttribute('data-score')].concat(Array.from(tr.children).slice(1, 3).map(td => td.textContent)));""")
    score_keys = [k for k in demo["rows"][0] if k not in ("question_id", "category", "image", "label", "prediction",
                                                          "is_false", "answer")]
    assert [r[0] for r in score_rows] == score_keys
    for key, value, rank in score_rows:
        mine = float(row[key])
        assert value == f"{mine:.4f}"
        expected_rank = 1 + sum(float(r[key]) > mine for r in demo["rows"])  # ties share the best rank
        assert rank == f"{expected_rank} of 30"
    tokens = browser.text(browser.find("#detail-tokens"))
    assert f"{generations[qid]['greedy']['token_logprobs'][0]:.4f}" in tokens and "▁" in tokens  # the tokenizer's pieces
    assert browser.execute("return document.getElementById('detail-canvas').getAttribute('data-image')") == "drawn"
    assert severe(browser.console()) == []


def test_clicking_a_roc_point_selects_the_questions_at_its_threshold(demo, browser):
    open_page(browser, demo["page"])
    browser.click(browser.find("#tab-summary"))
    # Draw naive_entropy alone, on all questions.
    browser.execute("""document.querySelectorAll('#curve-legend input').forEach(function (box) {
        if (box.checked !== (box.getAttribute('data-score') === 'naive_entropy')) box.click(); });""")
    values = np.array([float(r["naive_entropy"]) for r in demo["rows"]])
    wrong = np.array([r["is_false"] == "1" for r in demo["rows"]])
    threshold = sorted(set(values), reverse=True)[6]  # the seventh distinct value from the top
    flagged = values >= threshold
    fpr, tpr = (flagged & ~wrong).sum() / (~wrong).sum(), (flagged & wrong).sum() / wrong.sum()
    browser.execute("document.getElementById('roc-curve').scrollIntoView()")
    left, top, width, height = browser.execute("""
        var r = document.querySelector('#roc-curve .plot-area').getBoundingClientRect();
        return [r.left, r.top, r.width, r.height];""")
    x, y = left + fpr * width, top + (1 - tpr) * height
    browser.pointer(x, y)
    tip = browser.execute("return document.getElementById('curve-tip').textContent")
    assert f"naive_entropy ≥ {threshold:.4f}" in tip and f"FPR {fpr:.3f}, TPR {tpr:.3f}" in tip
    assert f"flags {flagged.sum()} of 30" in tip
    browser.pointer(x, y, click=True)

    assert browser.execute("return document.getElementById('panel-questions').classList.contains('active')")
    assert row_count(browser) == f"{flagged.sum()} of 30 questions"
    assert browser.text(browser.find("#threshold-text")).startswith(f"naive_entropy ≥ {threshold:.4f} in all")
    assert visible_ids(browser)[0] == demo["rows"][int(values.argmax())]["question_id"]
    browser.click(browser.find("#threshold-clear"))
    assert row_count(browser) == "30 of 30 questions"
    assert severe(browser.console()) == []


def test_attention_map_lies_on_the_image_with_the_tools_hottest_patch(demo, browser):
    stats = [json.loads(line) for line in (demo["attention_dir"] / "attention_stats.jsonl").open()]
    page = demo["attention_page"].read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', page, re.S).group(1))
    assert data["attention"]["questions"] == data["attention"]["withMaps"] == ATTENTION_QUESTIONS
    for row in stats:
        entry = data["attention"]["byId"][str(row["question_id"])]
        levels = np.frombuffer(base64.b64decode(entry["map"]), dtype=np.uint8).reshape(24, 24)
        assert levels[row["hottest_row"], row["hottest_col"]] == 255  # the table's hottest patch is the map's
        side = max(row["width"], row["height"])
        assert entry["geometry"] == {"width": row["width"], "height": row["height"], "side": side,
                                     "dx": (side - row["width"]) // 2, "dy": (side - row["height"]) // 2}

    open_page(browser, demo["attention_page"])
    row = stats[0]
    click_row(browser, str(row["question_id"]))
    table = browser.text(browser.find("#detail-attention"))
    assert f"hottest patch (row, col) ({row['hottest_row']}, {row['hottest_col']})" in table
    box = "padding only" if row["hottest_box"] is None else "[" + ", ".join(f"{v:g}" for v in row["hottest_box"]) + "]"
    assert box in table
    assert browser.execute("return !!document.getElementById('heat-toggle')")
    assert browser.execute("return document.getElementById('detail-canvas').getAttribute('data-image')") == "drawn"
    assert severe(browser.console()) == []


def test_question_text_is_shown_as_text_never_as_markup(browser, tmp_path):
    from scripts.bench_report import write_synthetic_run

    hostile = '</script><img src=x onerror="window.pwned=1"><b>bold</b>'
    paths = write_synthetic_run(str(tmp_path), images={"random": 2}, samples=3, bootstrap=10,
                                question_text=lambda i: f"Is there a {hostile}?" if i == 0 else None)
    output = tmp_path / "report.html"
    run_module("-m", "semantic_entropy.report", "--run-dir", paths["run_dir"], "--image-folder", paths["image_dir"],
               "--tokenizer", "none", "--output", str(output), "--link-images")
    open_page(browser, output)
    click_row(browser, "10000001")
    assert browser.execute("return document.getElementById('detail-prompt').textContent").startswith(
        f"Is there a {hostile}?")
    assert browser.execute("return [window.pwned, document.querySelectorAll('img, b').length]") == [None, 0]
    # A linked image loads from its file:// path relative to the page.
    assert browser.wait_for("return document.getElementById('detail-canvas').getAttribute('data-image') === 'drawn'")
    assert severe(browser.console()) == []


def test_a_question_named_in_the_url_opens_selected(demo, browser):
    qid = demo["rows"][5]["question_id"]
    browser.open(demo["page"].as_uri() + f"#q={qid}")
    browser.wait_for("return window.reportTimings && window.reportTimings.ready")
    assert browser.text(browser.find("#detail-title")) == f"Question {qid}"
    assert browser.execute("return document.querySelector('.vrow.selected').children[0].textContent") == qid
