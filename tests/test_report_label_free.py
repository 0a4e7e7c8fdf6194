"""The results page of a run without labels: open-ended questions on the demo world.

The run is the three stages on six open-ended questions of two categories (LLaVA's format:
question_id, image, text, category; no labels) with a tiny NLI judge, then stage 3 without
--annotation-dir and the page. Expected numbers come from the run's own files (generations,
uncertainty, eval_auroc's per_question.csv and distributions.json); the page must show every
question and the distributions, and nothing about right or wrong answers.
"""

import csv
import json
import pathlib
import re

import numpy as np
import pytest

from semantic_entropy import compute_se_myself, eval_auroc, model_vqa_loader
from semantic_entropy.browser import headless
from semantic_entropy.browser.build import ReportOptions, build_report
from semantic_entropy.browser.run_files import find_run_files
from semantic_entropy.demo.tiny_models import save_tiny_nli_model
from semantic_entropy.evaluation.distributions import ScoredQuestions, distributions
from semantic_entropy.evaluation.joining import ScoreColumn
from tests.report_page import open_page

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEMO_IMAGES = REPO_ROOT / "playground" / "data" / "eval" / "shapes_pope" / "images"
DEMO_MODEL = REPO_ROOT / "playground" / "models" / "llava-v1.5-shapes-tiny"
BINS = 5
QUESTIONS = [("conv", "Describe the image."), ("conv", "What shapes are in the image?"),
             ("conv", "What colour is the largest shape?"), ("detail", "Describe the image in detail."),
             ("detail", "Where is the smallest shape?"), ("detail", "How many shapes are there?")]
# Anything that would speak of labels or correctness, in the table or the summary.
CORRECTNESS_KEYS = {"label", "prediction", "wrong", "is_false", "n_errors", "accuracy", "error_rate", "auroc",
                    "aupr", "paired", "paired_reference"}

pytestmark = pytest.mark.skipif(not (DEMO_MODEL / "config.json").exists(),
                                reason=f"the demo model {DEMO_MODEL.relative_to(REPO_ROOT)} is not trained yet")
needs_chromium = pytest.mark.skipif(not headless.available(),
                                    reason=f"the browser tests need {headless.CHROMIUM} and {headless.CHROMEDRIVER} "
                                           "(Debian: apt-get install chromium chromium-driver)")


def read_jsonl(path):
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("label_free")
    run_dir = root / "open_n3"
    run_dir.mkdir()
    question_file = root / "open.jsonl"
    question_file.write_text("".join(
        json.dumps({"question_id": i + 1, "image": f"shapes_test_{i:06d}.png", "text": text, "category": category}) + "\n"
        for i, (category, text) in enumerate(QUESTIONS)))
    model_vqa_loader.main([
        "--model-path", str(DEMO_MODEL), "--question-file", str(question_file), "--image-folder", str(DEMO_IMAGES),
        "--answers-file", str(run_dir / "answers.jsonl"), "--generations-file", str(run_dir / "generations.jsonl"),
        "--num-samples", "3", "--max-new-tokens", "12", "--sampling-temperature", "2.0", "--device", "cpu"])
    # Every pair neutral: strict clusters are the distinct texts, so the scores vary between questions.
    judge = save_tiny_nli_model(str(root / "nli"), {"entailment": 0.2, "neutral": 0.7, "contradiction": 0.1})
    assert compute_se_myself.main(["--generations-file", str(run_dir / "generations.jsonl"), "--output-file",
                                   str(run_dir / "uncertainty_nli.jsonl"), "--judge", "nli", "--judge-model", judge,
                                   "--device", "cpu"]) == 0
    eval_dir = run_dir / "eval_nli"
    assert eval_auroc.main(["--uncertainty-file", str(run_dir / "uncertainty_nli.jsonl"), "--question-file",
                            str(question_file), "--answers-file", str(run_dir / "answers.jsonl"), "--output-dir",
                            str(eval_dir), "--bins", str(BINS), "--print", "none", "--no-plots"]) == 0
    page = run_dir / "report.html"
    result = build_report(ReportOptions(run_dir=str(run_dir), output=str(page)))
    with open(eval_dir / "per_question.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {"run_dir": run_dir, "eval_dir": eval_dir, "page": page, "result": result, "rows": rows,
            "data": embedded_data(page.read_text(encoding="utf-8")),
            "distributions": json.loads((eval_dir / "distributions.json").read_text()),
            "generations": read_jsonl(run_dir / "generations.jsonl"),
            "uncertainty": read_jsonl(run_dir / "uncertainty_nli.jsonl")}


DATA_BLOCK = re.compile(r'<script type="application/json" id="report-data">(.*?)</script>', re.DOTALL)


def embedded_data(page: str) -> dict:
    return json.loads(DATA_BLOCK.search(page).group(1))


def keys_within(value) -> set:
    """Every dictionary key anywhere inside `value`."""
    if isinstance(value, dict):
        return set(value).union(*(keys_within(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(keys_within(v) for v in value))
    return set()


# ------------------------------------------------------------------ the page's data


def test_every_question_is_on_the_page_with_its_answers_and_clusters(run):
    data = run["data"]
    table, details = data["questions"]["rows"], data["questions"]["details"]
    assert run["result"]["questions"] == len(table["id"]) == len(QUESTIONS)
    assert data["mode"] == "distributions"
    assert table["id"] == [str(g["question_id"]) for g in run["generations"]]
    assert table["split"] == [category for category, _ in QUESTIONS]
    assert table["question"] == [text for _, text in QUESTIONS]
    assert table["image"] == [g["image"] for g in run["generations"]]
    assert table["answer"] == [g["greedy"]["text"] for g in run["generations"]]
    assert set(data["images"]) == set(table["image"])  # every image embedded
    for detail, generation, scored in zip(details, run["generations"], run["uncertainty"]):
        assert [s[0] for s in detail["samples"]] == [s["text"] for s in generation["samples"]]
        assert detail["clusters"][0]["ids"] == scored["sample_cluster_ids"]
        assert [t[1] for t in detail["greedy"]["tokens"]] == pytest.approx(generation["greedy"]["token_logprobs"],
                                                                           abs=1e-4)
    keys = data["questions"]["scoreKeys"]
    assert keys == [k for k in run["rows"][0] if k not in ("question_id", "category")]
    for key, column in zip(keys, table["scores"]):
        assert column == [u["scores"][key] for u in run["uncertainty"]]


def test_nothing_on_the_page_speaks_of_labels_or_correctness(run):
    data = run["data"]
    assert set(data["questions"]["rows"]) == {"id", "split", "image", "question", "answer", "scores"}
    assert not keys_within(data["questions"]["rows"]) & CORRECTNESS_KEYS
    assert not keys_within(data["summary"]) & CORRECTNESS_KEYS
    headline = {label: value for label, value, _ in data["provenance"]["headline"]}
    assert headline["labels"] == "none: score distributions only" and headline["histogram bins"] == BINS
    assert not [label for label in headline if "bootstrap" in label or label == "interval level"]
    manifest = json.loads(pathlib.Path(str(run["page"]) + ".manifest.json").read_text())
    assert "distributions" in manifest["inputs"] and "metrics" not in manifest["inputs"]


def test_the_summary_is_eval_aurocs_distributions(run):
    summary = run["data"]["summary"]
    assert summary["report"] == run["distributions"]  # as written, number for number
    assert list(summary["report"]) == ["all", "conv", "detail"]
    assert summary["columns"] == run["data"]["questions"]["scoreKeys"]
    assert summary["statistics"] == ["n", "mean", "std", "min", "q05", "q25", "q50", "q75", "q95", "max"]
    # The same distributions again from the page's own table: its rows and the summary agree.
    table = run["data"]["questions"]["rows"]
    columns = [ScoreColumn(key, "u", key, np.array(values)) for key, values in zip(summary["columns"], table["scores"])]
    again = distributions(ScoredQuestions(table["id"], np.array(table["split"]), columns), BINS)
    for split, entry in again.items():
        for key in summary["columns"]:
            assert entry[key]["histogram"] == summary["report"][split][key]["histogram"]
            assert entry[key]["mean"] == pytest.approx(summary["report"][split][key]["mean"])


def test_the_run_files_follow_stage_3s_mode(run, tmp_path):
    files = find_run_files(str(run["run_dir"]))
    assert files.mode == "distributions" and files.summary == str(run["eval_dir"] / "distributions.json")
    (run["eval_dir"] / "distributions.json").rename(tmp_path / "moved.json")
    try:
        with pytest.raises(ValueError, match=r"^missing score distributions \(stage 3, no labels\): .*distributions"):
            find_run_files(str(run["run_dir"]))
    finally:
        (tmp_path / "moved.json").rename(run["eval_dir"] / "distributions.json")


# ------------------------------------------------------------------ the page in Chromium


def visible_ids(browser):
    return browser.execute("""
        return Array.from(document.querySelectorAll('.vrow')).filter(r => r.style.display !== 'none')
          .sort((a, b) => new DOMMatrix(a.style.transform).f - new DOMMatrix(b.style.transform).f)
          .map(r => r.children[0].textContent);""")


def severe(entries):
    return [e for e in entries if e.get("level") in ("SEVERE", "WARNING")]


@needs_chromium
def test_page_opens_with_every_question_and_no_correctness(run, browser):
    open_page(browser, run["page"])
    assert browser.text(browser.find("#row-count")) == f"{len(QUESTIONS)} of {len(QUESTIONS)} questions"
    assert sorted(visible_ids(browser)) == sorted(run["data"]["questions"]["rows"]["id"])
    headers = browser.execute("return Array.from(document.querySelectorAll('.vhead .cell')).map(c => c.textContent)")
    assert headers[:4] == ["id", "split", "question", "greedy answer"] and "label" not in headers
    assert "correct" not in headers
    assert browser.execute("""return ['filter-correct', 'filter-direction', 'summary-labels', 'roc-curve',
        'metric-table'].filter(id => document.getElementById(id) !== null)""") == []
    browser.click(browser.find_all(".vrow")[0])
    assert "Samples by meaning cluster" in browser.text(browser.find("#detail"))
    first = run["data"]["questions"]["rows"]
    assert browser.execute("return Array.from(document.querySelectorAll('#detail .badge')).map(b => b.textContent)") \
        == [first["split"][0], f"image: {first['image'][0]}"]  # no right/wrong badge, no label
    assert browser.execute("return document.getElementById('detail-answer').parentNode.textContent") == first["answer"][0]
    assert not browser.execute("return document.querySelector('#detail .right, #detail .wrong, #detail-correct')")
    assert browser.execute("return document.getElementById('detail-canvas').getAttribute('data-image')") == "drawn"
    browser.click(browser.find("#tab-settings"))
    assert "labels none: score distributions only" in browser.text(browser.find("#headline-table"))
    assert severe(browser.console()) == []


@needs_chromium
def test_summary_shows_eval_aurocs_distributions_per_split(run, browser):
    open_page(browser, run["page"])
    browser.click(browser.find("#tab-summary"))
    report = run["distributions"]
    for split in report:
        browser.execute("""var s = document.getElementById('distribution-split'); s.value = arguments[0];
                           s.dispatchEvent(new Event('change'));""", split)
        cells = browser.execute("""return Array.from(document.querySelectorAll('#distribution-grid tr[data-score]'))
            .map(tr => [tr.getAttribute('data-score'), Array.from(tr.querySelectorAll('td[data-statistic]'))
                        .map(td => [td.getAttribute('data-statistic'), td.textContent])]);""")
        assert [key for key, _ in cells] == run["data"]["summary"]["columns"]
        for key, statistics in cells:
            for name, text in statistics:
                assert float(text) == pytest.approx(report[split][key][name], abs=5e-4 + 1e-9), (split, key, name)
        bars = browser.execute("""return Array.from(document.querySelectorAll('.histogram')).map(svg =>
            [svg.getAttribute('data-score'), Array.from(svg.querySelectorAll('.bar')).map(b => +b.getAttribute('data-count'))]);""")
        assert dict(bars) == {key: report[split][key]["histogram"]["counts"] for key in run["data"]["summary"]["columns"]}
    assert severe(browser.console()) == []


@needs_chromium
def test_clicking_a_histogram_bar_lists_the_questions_in_its_bin(run, browser):
    open_page(browser, run["page"])
    browser.click(browser.find("#tab-summary"))
    split, key = "detail", "naive_entropy"
    browser.execute("""var s = document.getElementById('distribution-split'); s.value = arguments[0];
                       s.dispatchEvent(new Event('change'));""", split)
    histogram = run["distributions"][split][key]["histogram"]
    edges, counts = histogram["edges"], histogram["counts"]
    last = max(k for k, count in enumerate(counts) if count)  # the last bin is closed on the right
    browser.execute("document.querySelector('.histogram[data-score=\"naive_entropy\"]').scrollIntoView()")
    browser.click(browser.find(f'.histogram[data-score="{key}"] .bar[data-bin="{last}"]'))
    assert browser.execute("return document.getElementById('panel-questions').classList.contains('active')")
    expected = [r["question_id"] for r in run["rows"] if r["category"] == split
                and edges[last] <= float(r[key]) and (float(r[key]) < edges[last + 1] or last == len(counts) - 1)]
    assert len(expected) == counts[last]
    assert browser.text(browser.find("#row-count")) == f"{counts[last]} of {len(QUESTIONS)} questions"
    assert sorted(visible_ids(browser)) == sorted(expected)
    assert browser.text(browser.find("#threshold-text")).startswith(f"{key} in [")
    browser.click(browser.find("#threshold-clear"))  # the bar's split stays chosen
    assert browser.text(browser.find("#row-count")) == f"{run['distributions'][split]['n']} of {len(QUESTIONS)} questions"
    assert severe(browser.console()) == []


@needs_chromium
def test_split_and_score_filters(run, browser):
    open_page(browser, run["page"])
    browser.execute("""var s = document.getElementById('filter-split'); s.value = 'conv';
                       s.dispatchEvent(new Event('change'));""")
    assert visible_ids(browser) == [r["question_id"] for r in run["rows"] if r["category"] == "conv"]
    browser.execute("""var s = document.getElementById('filter-split'); s.value = 'all';
                       s.dispatchEvent(new Event('change'));
                       var score = document.getElementById('filter-score');
                       score.value = String(arguments[0]); score.dispatchEvent(new Event('change'));""",
                    run["data"]["questions"]["scoreKeys"].index("naive_entropy"))
    values = sorted(float(r["naive_entropy"]) for r in run["rows"])
    low = values[2]
    browser.type_text(browser.find("#filter-score-min"), repr(low))
    expected = [r["question_id"] for r in run["rows"] if float(r["naive_entropy"]) >= low]
    assert visible_ids(browser) == expected and len(expected) >= 4
    assert severe(browser.console()) == []
