"""Stage 2 end to end: synthetic generations in, uncertainty lines and a manifest out."""

import json
import math
import pathlib
import subprocess
import sys

import pytest

from llava.jsonl_io import read_jsonl
from semantic_entropy.compute_se_myself import main
from semantic_entropy.sampling.generations_io import GenerationsError, iter_generations
from semantic_entropy.demo.tiny_models import save_tiny_nli_model

PROMPT = "Is there a dog in the image?\nAnswer the question using a single word or phrase."


def answer(text, logprobs, entropies=None, eos=True):
    ids = list(range(100, 100 + len(logprobs) - int(eos))) + ([2] if eos else [])
    return {"text": text, "token_ids": ids, "token_logprobs": logprobs,
            "token_entropies": entropies or [0.1] * len(logprobs), "ends_with_eos": eos}


def record(question_id, samples, greedy=None, category="adversarial", **extra):
    return {
        "question_id": question_id, "category": category, "image": "x.jpg", "prompt": PROMPT,
        "greedy": greedy or answer("Yes", [-0.1, -0.01]),
        "samples": samples,
        "first_token": {"yes_mass": 0.81, "no_mass": 0.17},
        "sampling": {"num_samples": len(samples), "temperature": 1.0, "top_p": None, "top_k": None,
                     "seed": 0, "question_seed": 7, "max_new_tokens": 128},
        "model_id": "tiny",
        **extra,
    }


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.fixture
def generations(tmp_path):
    records = [
        # Log-likelihoods (EOS excluded): -1 (Yes), -1 (yes.), -2 (No, mean of -1.5, -2.5).
        record(1, [answer("Yes", [-1.0, -0.3]), answer("No", [-1.5, -2.5, -0.2]), answer("yes.", [-1.0, -0.5])],
               greedy=answer("Yes", [-0.25, -0.5, -0.01], [0.6, 0.2, 0.05]), p_true=0.9),
        record(2, [answer("No", [-0.1, -0.01])] * 4, greedy=answer("No", [-0.1, -0.01]), category="random"),
        record(10000003, [answer("Yes", [-0.2, -0.1]), answer("No", [-0.2, -0.1])], category="popular"),
    ]
    return write_jsonl(tmp_path / "generations.jsonl", records)


def run_cli(*args):
    return main([str(a) for a in args])


def by_id(path):
    return {r["question_id"]: r for r in read_jsonl(path)}


def test_end_to_end_exact_judge(generations, tmp_path, capsys):
    output = tmp_path / "uncertainty.jsonl"
    assert run_cli("--generations-file", generations, "--output-file", output) == 0
    rows = by_id(output)
    assert list(rows) == [1, 2, 10000003]

    first = rows[1]
    assert first["category"] == "adversarial"
    assert first["sample_cluster_ids"] == [0, 1, 0]
    assert first["greedy_cluster_id"] == 0
    # p(yes) = 2 e^-1 / (2 e^-1 + e^-2) = 2 / (2 + e^-1)
    p_yes = 2 / (2 + math.exp(-1))
    assert first["cluster_probs"] == pytest.approx([p_yes, 1 - p_yes])
    scores = first["scores"]
    assert scores["semantic_entropy"] == pytest.approx(-(p_yes * math.log(p_yes) + (1 - p_yes) * math.log(1 - p_yes)))
    assert scores["discrete_semantic_entropy"] == pytest.approx(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)))
    assert scores["naive_entropy"] == pytest.approx(4 / 3)
    p = 0.81 / 0.98
    assert scores["yes_no_entropy"] == pytest.approx(-(p * math.log(p) + (1 - p) * math.log(1 - p)))
    assert scores["greedy_neg_log_likelihood"] == pytest.approx(0.75)
    assert scores["greedy_perplexity"] == pytest.approx(math.exp(0.375))
    assert scores["greedy_mean_token_entropy"] == pytest.approx(0.4)
    assert scores["num_semantic_sets"] == 2
    assert scores["eigval_laplacian"] == pytest.approx(2.0)
    assert scores["degree_matrix"] == pytest.approx((9 - 5) / 9)
    assert scores["lexical_similarity_rougeL"] == pytest.approx(2 / 3)  # Yes/No F=0, Yes/yes F=1
    assert scores["p_true"] == pytest.approx(0.1)

    agree = rows[2]["scores"]
    assert agree["semantic_entropy"] == 0.0 and agree["discrete_semantic_entropy"] == 0.0
    assert "p_true" not in agree  # no p_true field: skipped, with a message
    assert "p_true" not in capsys.readouterr().err  # not asked for: left out silently

    manifest = json.loads((tmp_path / "uncertainty.jsonl.manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["settings"]["judge"] == "exact" and manifest["settings"]["strict"] is True
    assert manifest["details"]["input_shape"] == "generations_jsonl"
    assert manifest["details"]["counts"] == {"written": 3, "already_done": 0, "input_questions": 3}
    skipped = manifest["details"]["skipped_measures"]["p_true"]
    assert (skipped["missing"], skipped["questions"]) == (["p_true"], 2)
    assert manifest["versions"]["numpy"]


def test_measures_flag_and_unknown_measure(generations, tmp_path, capsys):
    output = tmp_path / "u.jsonl"
    assert run_cli("--generations-file", generations, "--output-file", output,
                   "--measures", "naive_entropy", "semantic_entropy") == 0
    assert set(by_id(output)[1]["scores"]) == {"semantic_entropy", "naive_entropy"}
    with pytest.raises(SystemExit):
        run_cli("--generations-file", generations, "--output-file", tmp_path / "v.jsonl", "--measures", "nope")
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_nli_judge_extends_score_names(generations, tmp_path):
    model = save_tiny_nli_model(str(tmp_path / "nli"), {"entailment": 0.2, "neutral": 0.7, "contradiction": 0.1})
    output = tmp_path / "u.jsonl"
    assert run_cli("--generations-file", generations, "--output-file", output, "--judge", "nli",
                   "--judge-model", model, "--non-strict", "--no-question-prefix", "--device", "cpu") == 0
    scores = by_id(output)[1]["scores"]
    assert "semantic_entropy_nli_nonstrict_noquestion" in scores
    assert "eigval_laplacian_nli_noquestion" in scores
    assert "naive_entropy" in scores and "semantic_entropy" not in scores
    # Neutral both ways: only identical texts share a cluster ("Yes", "No", "yes." all differ).
    assert by_id(output)[1]["sample_cluster_ids"] == [0, 1, 2]
    manifest = json.loads((tmp_path / "u.jsonl.manifest.json").read_text())
    assert manifest["details"]["judge"]["name"] == "nli" and manifest["settings"]["question_prefix"] is False


def test_resume_writes_each_question_once(generations, tmp_path):
    output = tmp_path / "u.jsonl"
    assert run_cli("--generations-file", generations, "--output-file", output) == 0
    # A crash after two records, mid-write of the third, leaves half a line; resuming cuts it and
    # appends whole records.
    lines = output.read_text().splitlines(keepends=True)
    output.write_text("".join(lines[:2]) + lines[2][:30])
    assert run_cli("--generations-file", generations, "--output-file", output) == 0
    ids = [r["question_id"] for r in read_jsonl(str(output))]
    assert ids == [1, 2, 10000003]
    manifest = json.loads((tmp_path / "u.jsonl.manifest.json").read_text())
    assert manifest["details"]["counts"]["written"] == 1 and manifest["details"]["counts"]["already_done"] == 2


def test_resume_with_other_settings_is_refused(generations, tmp_path, capsys):
    output = tmp_path / "u.jsonl"
    assert run_cli("--generations-file", generations, "--output-file", output) == 0
    assert run_cli("--generations-file", generations, "--output-file", output, "--measures", "naive_entropy") == 1
    assert "other settings" in capsys.readouterr().err


# ------------------------------------------------------------------ bad input


def expect_error(tmp_path, records, *patterns, capsys=None):
    path = write_jsonl(tmp_path / "bad.jsonl", records)
    with pytest.raises(GenerationsError) as error:
        list(iter_generations(path))
    message = str(error.value)
    for pattern in patterns:
        assert pattern in message, message
    return message


def test_bad_input_names_question_and_line(tmp_path):
    good = record(5, [answer("Yes", [-0.1, -0.01])])
    expect_error(tmp_path, [good, record(6, [answer("Yes", [-0.1]), {"text": "No", "token_ids": [],
                 "token_logprobs": [], "ends_with_eos": False}])],
                 "bad.jsonl:2", "question_id 6", "samples[1] has no tokens")
    expect_error(tmp_path, [record(7, [answer("Yes", [float("nan"), -0.01])])],
                 "bad.jsonl:1", "question_id 7", "samples[0].token_logprobs[0] is nan")
    missing = record(8, [answer("Yes", [-0.1, -0.01])])
    del missing["samples"]
    expect_error(tmp_path, [missing], "question_id 8", "missing field 'samples'")
    no_text = record(9, [{"token_logprobs": [-0.1], "ends_with_eos": False}])
    expect_error(tmp_path, [no_text], "question_id 9", "missing field 'text'")
    no_eos_flag = record(10, [{"text": "Yes", "token_logprobs": [-0.1]}])
    expect_error(tmp_path, [no_eos_flag], "question_id 10", "ends_with_eos")
    expect_error(tmp_path, [good, good], "bad.jsonl:2", "duplicate question_id")
    expect_error(tmp_path, [record(11, [answer("Yes", [0.5, -0.01])])], "question_id 11", "not a log-probability")


def test_sample_without_tokens_fails_naming_question(tmp_path, capsys):
    path = write_jsonl(tmp_path / "g.jsonl", [record(12, [answer("Yes", [-0.1, -0.01]), answer("", [], eos=False)])])
    assert run_cli("--generations-file", path, "--output-file", tmp_path / "u.jsonl") == 1
    err = capsys.readouterr().err
    assert "g.jsonl:1: question_id 12" in err and "no tokens" in err
    assert not (tmp_path / "u.jsonl").read_text()  # nothing half-written


# ------------------------------------------------------------------ responses-object shape


def test_responses_object_shape(tmp_path, capsys):
    entries = {
        "1": {"question_id": 1, "prompt": PROMPT, "responses": ["Yes", "yes", "No", "Yes"], "metadata": {"seed": 0}},
        "2": {"question_id": 2, "prompt": PROMPT, "responses": ["No"] * 3, "metadata": {}},
    }
    path = tmp_path / "responses.json"
    path.write_text(json.dumps(entries, indent=2))
    output = tmp_path / "u.jsonl"
    assert run_cli("--generations-file", path, "--output-file", output) == 0
    rows = by_id(output)
    assert rows[1]["sample_cluster_ids"] == [0, 0, 1, 0]
    assert rows[1]["greedy_cluster_id"] is None and rows[1]["cluster_probs"] is None
    assert rows[1]["scores"]["discrete_semantic_entropy"] == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert "semantic_entropy" not in rows[1]["scores"] and "naive_entropy" not in rows[1]["scores"]
    assert rows[2]["scores"]["num_semantic_sets"] == 1
    assert "semantic_entropy" not in capsys.readouterr().err  # left out silently: not asked for
    # asked for by name, the unavailable ones are reported in one line
    assert run_cli("--generations-file", path, "--output-file", tmp_path / "u2.jsonl",
                   "--measures", "semantic_entropy", "naive_entropy", "discrete_semantic_entropy") == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("not computed")]
    assert len(lines) == 1 and "semantic_entropy (no sample_token_logprobs" in lines[0]
    assert "naive_entropy" in lines[0] and "discrete_semantic_entropy" not in lines[0]
    assert json.loads((tmp_path / "u.jsonl.manifest.json").read_text())["details"]["input_shape"] == "notes_json"


def test_module_runs_from_the_command_line(generations, tmp_path):
    output = tmp_path / "u.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "semantic_entropy.compute_se_myself", "--generations-file", generations,
         "--output-file", str(output), "--measures", "discrete_semantic_entropy"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(str(output))) == 3


def test_bench_script_runs_on_a_small_file(tmp_path):
    result = subprocess.run(
        [sys.executable, str(pathlib.Path(__file__).resolve().parents[1] / "scripts" / "bench_scores.py"), "--questions", "30", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "30 questions x 10 samples" in result.stdout
    assert len(read_jsonl(str(tmp_path / "uncertainty.jsonl"))) == 30
