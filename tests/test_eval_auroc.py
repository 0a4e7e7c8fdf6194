"""Stage 3 CLI on a handmade POPE set: joins, errors naming ids, splits, tables, JSON, CSV and plots."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from llava.constants import POPE_ANSWER_SUFFIX
from llava.eval.eval_pope import PopeJoinError
from llava.jsonl_io import JsonlError
from semantic_entropy import eval_auroc
from semantic_entropy.eval_auroc import main, run
from semantic_entropy.evaluation import joining, plots, tables
from semantic_entropy.evaluation.metrics import aupr, auroc, prr

OFFSETS = {"adversarial": 0, "random": 10_000_000, "popular": 20_000_000}
PER_SPLIT = 12
# Which of each split's 12 greedy answers are wrong: random has none (its AUROC is n/a).
WRONG = {"adversarial": {2, 5, 9}, "random": set(), "popular": {0, 4, 7, 8, 11}}


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def build_pope_set(root):
    """Label files, LLaVA questions, greedy answers and two uncertainty files; returns paths and truth."""
    annotation_dir = root / "coco"
    annotation_dir.mkdir()
    questions, answers, truth = [], [], []
    rng = np.random.default_rng(0)
    for category, offset in OFFSETS.items():
        labels = []
        for k in range(PER_SPLIT):
            split_id, label = k + 1, ("yes" if k % 2 == 0 else "no")
            text = f"Is there a shape number {k} in the image?"
            labels.append({"question_id": split_id, "image": f"{category}_{k // 3}.png", "text": text, "label": label})
            question_id = offset + split_id
            questions.append({"question_id": question_id, "image": f"{category}_{k // 3}.png",
                              "text": text + POPE_ANSWER_SUFFIX, "category": category})
            wrong = k in WRONG[category]
            said_yes = (label == "yes") != wrong
            answers.append({"question_id": question_id, "prompt": text + POPE_ANSWER_SUFFIX,
                            "text": "Yes" if said_yes else "No, there is not.", "answer_id": f"a{question_id}",
                            "model_id": "handmade", "metadata": {}})
            truth.append((question_id, category, int(wrong)))
        write_jsonl(annotation_dir / f"coco_pope_{category}.json", labels)
    ids = np.array([t[0] for t in truth])
    is_false = np.array([t[2] for t in truth])
    # "informative" ranks errors high with noise; "yes_no_entropy" is coarse (ties); "noise" is random.
    scores = {
        "informative": is_false + rng.normal(scale=0.6, size=len(ids)),
        "yes_no_entropy": np.round(is_false * 0.5 + rng.random(len(ids)), 1),
        "noise": rng.random(len(ids)),
    }
    uncertainty = [{"question_id": int(qid), "category": cat, "sample_cluster_ids": [0, 0], "greedy_cluster_id": 0,
                    "cluster_probs": [1.0], "scores": {name: float(values[i]) for name, values in scores.items()}}
                   for i, (qid, cat, _) in enumerate(truth)]
    paths = {
        "annotation_dir": str(annotation_dir),
        "question_file": write_jsonl(root / "questions.jsonl", questions),
        "answers_file": write_jsonl(root / "answers.jsonl", answers),
        "exact": write_jsonl(root / "uncertainty_exact.jsonl", uncertainty),
    }
    # A second run with other score names (as another judge writes them).
    other = [{**r, "scores": {f"{k}_nli_strict": v * 0.5 for k, v in r["scores"].items()}} for r in uncertainty]
    paths["nli"] = write_jsonl(root / "uncertainty_nli.jsonl", other)
    return paths, ids, is_false, np.array([t[1] for t in truth]), scores, uncertainty


@pytest.fixture
def pope_set(tmp_path):
    return build_pope_set(tmp_path)


def cli_args(paths, output_dir, *extra, uncertainty=("exact",)):
    return ["--uncertainty-file", *(paths[u] for u in uncertainty), "--answers-file", paths["answers_file"],
            "--annotation-dir", paths["annotation_dir"], "--question-file", paths["question_file"],
            "--output-dir", str(output_dir), "--bootstrap", "200", *extra]


def test_cli_writes_every_report(pope_set, tmp_path, capsys):
    paths, ids, is_false, categories, scores, _ = pope_set
    out = tmp_path / "eval"
    assert main(cli_args(paths, out)) == 0
    for name in ("metrics.json", "metrics.csv", "metrics.md", "manifest.json", "per_question.csv",
                 "roc_curves.png", "rejection_curves.png", "score_distributions.png"):
        assert (out / name).stat().st_size > 0, name
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    report = json.loads((out / "metrics.json").read_text())
    assert list(report) == ["adversarial", "random", "popular", "all", "yes_answers", "no_answers"]
    assert report["all"]["n"] == 36 and report["all"]["n_errors"] == 8
    assert report["adversarial"]["accuracy"] == pytest.approx(9 / 12)
    assert report["popular"]["error_rate"] == pytest.approx(5 / 12)
    assert report["all"]["accuracy_ci_low"] < report["all"]["accuracy"] < report["all"]["accuracy_ci_high"]

    # Point values are the metrics of the joined arrays.
    for split in ("adversarial", "popular", "all"):
        mask = np.ones(len(ids), bool) if split == "all" else categories == split
        for measure, values in scores.items():
            cell = report[split][measure]
            assert cell["auroc"]["value"] == pytest.approx(auroc(is_false[mask], values[mask]))
            assert cell["aupr"]["value"] == pytest.approx(aupr(is_false[mask], values[mask]))
            assert cell["prr"]["value"] == pytest.approx(prr(is_false[mask], values[mask]))
            for metric in ("auroc", "aupr", "aurac", "prr", "acc_at_80", "acc_at_90", "acc_at_95"):
                assert cell[metric]["ci_low"] <= cell[metric]["value"] <= cell[metric]["ci_high"], (split, measure)

    # Random: every answer right -> n/a with the reason, but rejection accuracy is 1.
    random_cell = report["random"]["informative"]
    assert random_cell["auroc"]["value"] is None
    assert "every answer is correct" in random_cell["auroc"]["reason"]
    assert random_cell["acc_at_90"]["value"] == 1.0

    markdown = (out / "metrics.md").read_text()
    assert markdown in capsys.readouterr().out
    assert "| measure | adversarial | random | popular | all | yes_answers | no_answers |" in markdown
    assert "n/a: every answer is correct (12 of 12)" in markdown
    assert "Acc@95%" in markdown

    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 6 * 3
    assert {r["measure"] for r in rows} == set(scores)
    first = next(r for r in rows if r["split"] == "all" and r["measure"] == "informative")
    assert float(first["auroc"]) == pytest.approx(report["all"]["informative"]["auroc"]["value"])

    joined = list(csv.DictReader((out / "per_question.csv").open()))
    assert [int(r["question_id"]) for r in joined] == ids.tolist()
    assert [int(r["is_false"]) for r in joined] == is_false.tolist()
    # Everything the statistics read: the image (the bootstrap's unit) and the parsed answer (the direction splits).
    assert joined[0]["image"] == "adversarial_0.png" and joined[-1]["image"] == "popular_3.png"
    assert {r["prediction"] for r in joined} == {"yes", "no"}

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["bootstrap"] == 200 and manifest["settings"]["labels"] == ["uncertainty_exact"]
    assert manifest["details"]["coverage"]["random"] == {"answered": 12, "total": 12}


def test_two_files_make_one_comparison_table(pope_set, tmp_path):
    paths, *_ = pope_set
    out = tmp_path / "eval"
    report = run(eval_auroc.parse_args(cli_args(paths, out, "--labels", "exact", "nli", "--no-plots",
                                                uncertainty=("exact", "nli"))))
    keys = tables.column_keys(report)
    assert keys == ["exact/informative", "exact/yes_no_entropy", "exact/noise",
                    "nli/informative_nli_strict", "nli/yes_no_entropy_nli_strict", "nli/noise_nli_strict"]
    # Halving every score does not change a ranking metric; the same resamples give the same interval.
    assert report["all"]["exact/informative"]["auroc"] == report["all"]["nli/informative_nli_strict"]["auroc"]
    markdown = (out / "metrics.md").read_text()
    assert "| run | measure | adversarial | random | popular | all |" in markdown
    assert "| nli | noise_nli_strict |" in markdown
    assert not list(out.glob("*.png"))


def test_measures_filter_and_seeded_reproducibility(pope_set, tmp_path):
    paths, *_ = pope_set
    first = run(eval_auroc.parse_args(cli_args(paths, tmp_path / "a", "--measures", "yes_no_entropy", "--no-plots")))
    again = run(eval_auroc.parse_args(cli_args(paths, tmp_path / "b", "--measures", "yes_no_entropy", "--no-plots")))
    other = run(eval_auroc.parse_args(cli_args(paths, tmp_path / "c", "--measures", "yes_no_entropy", "--no-plots",
                                               "--seed", "1")))
    assert tables.column_keys(first) == ["yes_no_entropy"]
    assert first == again
    assert first["all"]["yes_no_entropy"]["auroc"]["ci_low"] != other["all"]["yes_no_entropy"]["auroc"]["ci_low"]
    with pytest.raises(ValueError, match=r"--measures \['nope'\] are in none"):
        run(eval_auroc.parse_args(cli_args(paths, tmp_path / "d", "--measures", "nope", "--no-plots")))


def test_no_bootstrap_gives_no_intervals(pope_set, tmp_path):
    paths, *_ = pope_set
    args = cli_args(paths, tmp_path / "eval", "--no-plots")
    args[args.index("--bootstrap") + 1] = "0"
    report = run(eval_auroc.parse_args(args))
    assert report["all"]["noise"]["auroc"]["ci_low"] is None
    assert "no intervals" in (tmp_path / "eval" / "metrics.md").read_text()


def rewrite(path, records):
    write_jsonl(__import__("pathlib").Path(path), records)


def test_scores_missing_an_answered_question_name_the_ids(pope_set, tmp_path):
    paths, *_, uncertainty = pope_set
    rewrite(paths["exact"], [r for r in uncertainty if r["question_id"] not in (3, 20000005)])
    with pytest.raises(PopeJoinError, match=r"2 answered question\(s\) without scores: question_id 3, 20000005"):
        run(eval_auroc.parse_args(cli_args(paths, tmp_path / "eval", "--no-plots")))


def test_scores_of_unknown_questions_name_the_ids(pope_set, tmp_path):
    paths, *_, uncertainty = pope_set
    rewrite(paths["exact"], uncertainty + [{**uncertainty[0], "question_id": 777}])
    with pytest.raises(PopeJoinError, match="not among the answers: 777"):
        run(eval_auroc.parse_args(cli_args(paths, tmp_path / "eval", "--no-plots")))


def test_duplicate_scores_are_an_error(pope_set, tmp_path):
    paths, *_, uncertainty = pope_set
    rewrite(paths["exact"], uncertainty + [uncertainty[4]])
    with pytest.raises(JsonlError, match="duplicate question_id 5"):
        run(eval_auroc.parse_args(cli_args(paths, tmp_path / "eval", "--no-plots")))


def test_duplicate_answers_are_an_error(pope_set, tmp_path):
    paths, *_ = pope_set
    answers = [json.loads(line) for line in open(paths["answers_file"])]
    rewrite(paths["answers_file"], answers + [answers[0]])
    with pytest.raises(PopeJoinError, match="duplicate answer for question_id 1"):
        run(eval_auroc.parse_args(cli_args(paths, tmp_path / "eval", "--no-plots")))


def test_category_and_measure_mismatches_name_the_ids(pope_set, tmp_path):
    paths, *_, uncertainty = pope_set
    moved = [{**r, "category": "popular"} if r["question_id"] == 10000002 else r for r in uncertainty]
    rewrite(paths["exact"], moved)
    with pytest.raises(PopeJoinError, match="category differs .* question_id 10000002"):
        run(eval_auroc.parse_args(cli_args(paths, tmp_path / "eval", "--no-plots")))
    lacking = [{**r, "scores": {"noise": 0.1}} if r["question_id"] == 7 else r for r in uncertainty]
    rewrite(paths["exact"], lacking)
    with pytest.raises(JsonlError, match="measure 'informative' is missing for question_id 7"):
        run(eval_auroc.parse_args(cli_args(paths, tmp_path / "eval", "--no-plots")))


def test_partial_answers_need_allow_partial(pope_set, tmp_path):
    paths, *_, uncertainty = pope_set
    answers = [json.loads(line) for line in open(paths["answers_file"])]
    rewrite(paths["answers_file"], [a for a in answers if a["question_id"] != 1])
    with pytest.raises(PopeJoinError, match="without an answer: question_id 1"):
        run(eval_auroc.parse_args(cli_args(paths, tmp_path / "eval", "--no-plots")))
    rewrite(paths["exact"], [r for r in uncertainty if r["question_id"] != 1])
    report = run(eval_auroc.parse_args(cli_args(paths, tmp_path / "eval", "--no-plots", "--allow-partial")))
    assert report["adversarial"]["n"] == 11


def test_labels_are_checked():
    with pytest.raises(ValueError, match="1 label"):
        joining.check_labels(["a"], ["x.jsonl", "y.jsonl"])
    with pytest.raises(ValueError, match="without '/'"):
        joining.check_labels(["a/b"], ["x.jsonl"])
    with pytest.raises(ValueError, match="more than one"):
        joining.check_labels(["a", "a"], ["x.jsonl", "y.jsonl"])


def test_module_entry_point_reports_errors(pope_set, tmp_path):
    paths, *_, uncertainty = pope_set
    rewrite(paths["exact"], uncertainty[1:])
    result = subprocess.run([sys.executable, "-m", "semantic_entropy.eval_auroc",
                             *cli_args(paths, tmp_path / "eval", "--no-plots")], capture_output=True, text=True)
    assert result.returncode == 1
    assert "error:" in result.stderr and "question_id 1" in result.stderr


def test_curve_figures_keep_the_columns_with_the_highest_auroc():
    is_false = np.array([1, 1, 0, 0])
    columns = [joining.ScoreColumn(name, name, name, np.array(values, dtype=float)) for name, values in
               (("chance", [0.5, 0.2, 0.5, 0.2]), ("perfect", [0.9, 0.8, 0.1, 0.2]), ("inverted", [0, 0, 1, 1]))]
    joined = joining.JoinedScores([1, 2, 3, 4], np.array(["random"] * 4), is_false, columns)
    assert [c.measure for c in plots.plotted_columns(joined, 2)] == ["perfect", "chance"]  # AUROC 1, 0.5
    assert [c.measure for c in plots.plotted_columns(joined, 3)] == ["chance", "perfect", "inverted"]  # all, as given


def test_answer_direction_splits_count_the_parsed_answers(pope_set, tmp_path):
    """By hand from WRONG: adversarial says "yes" to 0, 4, 6, 8, 10 (right) and 5, 9 (false "yes"), "no"
    to 1, 3, 7, 11 (right) and 2 (miss); random answers every question right (6 "yes"); popular says
    "yes" to 2, 6, 10 and 7, 11 (false), "no" to 1, 3, 5, 9 and 0, 4, 8 (misses)."""
    paths, _, is_false, _, scores, _ = pope_set
    report = run(eval_auroc.parse_args(cli_args(paths, tmp_path / "eval", "--no-plots")))
    yes, no = report["yes_answers"], report["no_answers"]
    assert (yes["n"], yes["n_errors"]) == (7 + 6 + 5, 2 + 0 + 2)
    assert (no["n"], no["n_errors"]) == (5 + 6 + 7, 1 + 0 + 3)
    # The split's metrics are those of its questions: the answers eval_pope parses as "yes".
    said_yes = np.array([r["prediction"] == "yes" for r in csv.DictReader((tmp_path / "eval" / "per_question.csv").open())])
    assert said_yes.sum() == 18
    assert report["yes_answers"]["informative"]["auroc"]["value"] == pytest.approx(
        auroc(is_false[said_yes], scores["informative"][said_yes]))
    assert "yes_answers: greedy answer parsed as \"yes\"; its errors are false \"yes\"" in \
        (tmp_path / "eval" / "metrics.md").read_text()


def test_paired_comparison_with_the_reference(pope_set, tmp_path):
    paths, *_ = pope_set
    out = tmp_path / "eval"
    report = run(eval_auroc.parse_args(cli_args(paths, out, "--no-plots")))
    for stats in report.values():
        assert stats["bootstrap_unit"] == "image" and stats["paired_reference"] == "yes_no_entropy"
        assert list(stats["paired"]) == ["informative", "noise"]  # every measure but the reference
    cell = report["all"]["paired"]["noise"]["auroc"]
    assert cell["value"] == pytest.approx(report["all"]["noise"]["auroc"]["value"]
                                          - report["all"]["yes_no_entropy"]["auroc"]["value"])
    assert 0 <= cell["p_value"] <= 1 and cell["ci_low"] <= cell["value"] <= cell["ci_high"]
    assert report["random"]["paired"]["noise"]["auroc"]["value"] is None  # no error in random
    assert report["all"]["n_units"] == 12 and report["adversarial"]["n_units"] == 4

    markdown = (out / "metrics.md").read_text()
    assert "Bootstrap unit: image." in markdown.split("## Paired")[0]  # named under the first table
    assert "## Paired AUROC difference from yes_no_entropy" in markdown
    assert "Holm-adjusted across the 2 measures of each column" in markdown
    rows = {(r["split"], r["measure"]): r for r in csv.DictReader((out / "metrics.csv").open())}
    assert float(rows["all", "noise"]["d_auroc"]) == pytest.approx(cell["value"])
    assert rows["all", "yes_no_entropy"]["d_auroc"] == ""  # the reference has no difference from itself
    # Holm over the two measures of a column: the larger p is at least the smaller p times one.
    p = [report["all"]["paired"][k]["auroc"]["p_value"] for k in ("informative", "noise")]
    holm_p = [float(rows["all", k]["d_auroc_p_holm"]) for k in ("informative", "noise")]
    assert min(holm_p) == pytest.approx(min(1.0, 2 * min(p)))

    other = run(eval_auroc.parse_args(cli_args(paths, tmp_path / "other", "--no-plots", "--compare-to", "noise")))
    assert other["all"]["paired_reference"] == "noise"
    assert other["all"]["paired"]["yes_no_entropy"]["auroc"]["value"] == pytest.approx(-cell["value"])
    with pytest.raises(ValueError, match="--compare-to 'nope' is not among the evaluated columns"):
        run(eval_auroc.parse_args(cli_args(paths, tmp_path / "bad", "--no-plots", "--compare-to", "nope")))
    # Without yes_no_entropy and semantic_entropy there is no reference and no paired table.
    alone = run(eval_auroc.parse_args(cli_args(paths, tmp_path / "alone", "--no-plots", "--measures", "noise")))
    assert alone["all"]["paired_reference"] is None and alone["all"]["paired"] == {}


def test_cluster_by_question_is_the_plain_question_bootstrap(pope_set, tmp_path):
    """--cluster-by question draws, per split, n question indices per resample from
    default_rng((seed, split index)), as the bootstrap of questions always did."""
    paths, _, is_false, categories, scores, _ = pope_set
    report = run(eval_auroc.parse_args(cli_args(paths, tmp_path / "eval", "--no-plots", "--cluster-by", "question")))
    mask = categories == "popular"  # split index 2
    labels, values = is_false[mask], scores["informative"][mask]
    rng = np.random.default_rng((0, 2))
    draws = []
    for _ in range(200):
        index = rng.integers(0, 12, size=12)
        try:
            draws.append(auroc(labels[index], values[index]))
        except ValueError:
            pass
    cell = report["popular"]["informative"]["auroc"]
    assert (cell["ci_low"], cell["ci_high"]) == pytest.approx(tuple(np.percentile(draws, [2.5, 97.5])), abs=1e-12)
    assert report["popular"]["bootstrap_unit"] == "question" and report["popular"]["n_units"] == 12


def test_help_shows_every_default():
    result = subprocess.run([sys.executable, "-m", "semantic_entropy.eval_auroc", "--help"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "None = image when the questions name their image (default: None)" in text
    assert "None = yes_no_entropy when present, else semantic_entropy (default: None)" in text
    options = [action for action in eval_auroc.build_parser()._actions if action.dest != "help"]
    assert len(options) == 19  # --bins added for the score distributions
    for action in options:
        assert action.help, action.dest
        if not action.required:
            # the default is printed after the option's help text
            assert f"{action.help} (default: " in text, action.dest
