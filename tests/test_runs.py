"""Run plumbing in every tool that writes records: refused resumes, the writer lock, one manifest
format, the conv-mode default, one-line user errors."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from llava.cli import run_main
from llava.conversation import DEFAULT_CONV_MODE
from llava.eval import model_vqa_loader as llava_loader
from llava.jsonl_io import read_jsonl
from semantic_entropy import baseline_probes, compute_se_myself, p_true, vision_probes, visualize_attention
from semantic_entropy import model_vqa_loader as stage1
from semantic_entropy.runs.lock import OutputLock, OutputLocked, is_locked
from semantic_entropy.runs.manifest import MANIFEST_FORMAT
from semantic_entropy.runs.record_output import ResumeRefused

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU = ["--device", "cpu"]


def model_flags(tiny):
    return ["--model-path", str(tiny.original), *CPU]


def stage1_flags(tiny, answers, *extra):
    return [*model_flags(tiny), "--question-file", str(tiny.question_file), "--image-folder", str(tiny.images),
            "--answers-file", str(answers), "--temperature", "0", "--max-new-tokens", "3", "--num-samples", "3",
            *extra]


@pytest.fixture(scope="module")
def finished(tiny_checkpoints, tmp_path_factory):
    """One finished run of every record-writing tool on the tiny model, as a template to copy."""
    root = tmp_path_factory.mktemp("finished")
    tiny = tiny_checkpoints
    stage1.main(stage1_flags(tiny, root / "a.jsonl", "--image-variants", "mean"))
    llava_loader.main([*model_flags(tiny), "--question-file", str(tiny.question_file), "--image-folder",
                       str(tiny.images), "--answers-file", str(root / "greedy.jsonl"), "--temperature", "0",
                       "--max-new-tokens", "3"])
    generations = root / "a.generations.jsonl"
    p_true.main([*model_flags(tiny), "--image-folder", str(tiny.images), "--generations-file", str(generations),
                 "--output-file", str(root / "ptrue.jsonl")])
    vision_probes.main([*model_flags(tiny), "--image-folder", str(tiny.images), "--generations-file",
                        str(generations), "--output-file", str(root / "probes.jsonl"), "--mask-fraction", "0.25"])
    baseline_probes.main([*model_flags(tiny), "--image-folder", str(tiny.images), "--generations-file",
                          str(generations), "--output-file", str(root / "baselines.jsonl")])
    assert compute_se_myself.main(["--generations-file", str(generations), "--output-file",
                                   str(root / "u.jsonl")]) == 0
    visualize_attention.main([*model_flags(tiny), "--question-file", str(tiny.question_file), "--image-folder",
                              str(tiny.images), "--output-dir", str(root / "attention"), "--max-new-tokens", "3",
                              "--max-pages", "0"])
    return root


def copy_of(finished, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(finished, target)
    return target


def snapshot(folder) -> dict:
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder)) if (folder / name).is_file()}


def changed_question_file(tiny, tmp_path):
    """The same questions with one text changed: another question file's content."""
    records = read_jsonl(str(tiny.question_file))
    records[0]["text"] = "Is there a cat in the image?"
    path = tmp_path / "questions_changed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# (tool, how to rerun it from a copied finished run, the setting named in the refusal)
def stage1_rerun(tiny, run, tmp_path, *extra, question_file=None):
    flags = stage1_flags(tiny, run / "a.jsonl", "--image-variants", "mean", *extra)
    if question_file is not None:
        flags[flags.index("--question-file") + 1] = str(question_file)
    stage1.main(flags)


STAGE1_CASES = [
    (("--num-samples", "4"), "sampling_num_samples: 3 -> 4"),
    (("--sampling-temperature", "0.7"), "sampling_temperature: 1.0 -> 0.7"),
    (("--seed", "1"), "seed: 0 -> 1"),
    (("--top-k", "5"), "sampling_top_k: null -> 5"),
    (("--top_p", "0.9"), "sampling_top_p: null -> 0.9"),
    (("--max-new-tokens", "4"), "sampling_max_new_tokens: 3 -> 4"),
    (("--conv-mode", "llava_v1"), "conv_mode: 'vicuna_v1' -> 'llava_v1'"),
    (("--image-variants", "mean,blur"), "image_variants:"),
    (("--dtype", "bfloat16"), "dtype: 'float32' -> 'bfloat16'"),
    (("--vision-dtype", "bfloat16"), "vision_dtype: 'float32' -> 'bfloat16'"),
    (("--num-chunks", "2"), "num_chunks: 1 -> 2"),
]


@pytest.mark.parametrize("extra,named", STAGE1_CASES, ids=[c[1].split(":")[0] for c in STAGE1_CASES])
def test_stage1_refuses_a_resume_with_another_setting(tiny_checkpoints, finished, tmp_path, extra, named):
    run = copy_of(finished, tmp_path)
    before = snapshot(run)
    with pytest.raises(ResumeRefused, match="other settings") as refused:
        stage1_rerun(tiny_checkpoints, run, tmp_path, *extra)
    assert named in str(refused.value)
    assert snapshot(run) == before  # nothing written, nothing lost
    assert is_locked(str(run / "a.generations.jsonl")) is None  # the lock went with the refusal


def test_stage1_refuses_another_model_and_another_question_file(tiny_checkpoints, finished, tmp_path):
    run = copy_of(finished, tmp_path)
    with pytest.raises(ResumeRefused, match=r"question_file: content changed"):
        stage1_rerun(tiny_checkpoints, run, tmp_path, question_file=changed_question_file(tiny_checkpoints, tmp_path))
    with pytest.raises(ResumeRefused, match=r"model_path: '.*llava-tiny' -> '.*llava-tiny-hf'"):
        flags = stage1_flags(tiny_checkpoints, run / "a.jsonl", "--image-variants", "mean")
        flags[flags.index("--model-path") + 1] = str(tiny_checkpoints.hf)
        stage1.main(flags)


def test_stage1_rerun_with_the_same_settings_is_a_no_op(tiny_checkpoints, finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    generations = (run / "a.generations.jsonl").read_bytes()
    stage1_rerun(tiny_checkpoints, run, tmp_path, "--batch-size", "2")  # execution settings may change
    assert (run / "a.generations.jsonl").read_bytes() == generations
    out = capsys.readouterr().out
    assert "resuming: 5 of 5 questions already done" in out and f"wrote {run / 'a.generations.jsonl'}" in out
    manifest = json.loads((run / "a.generations.jsonl.manifest.json").read_text())
    assert manifest["format"] == MANIFEST_FORMAT and manifest["status"] == "complete" and manifest["records"] == 5
    assert manifest["execution"]["batch_size"] == 2 and manifest["settings"]["conv_mode"] == "vicuna_v1"
    assert all(r["conv_mode"] == "vicuna_v1" for r in read_jsonl(str(run / "a.generations.jsonl")))


def test_records_without_a_manifest_are_refused(tiny_checkpoints, finished, tmp_path):
    run = copy_of(finished, tmp_path)
    os.remove(run / "a.generations.jsonl.manifest.json")
    with pytest.raises(ResumeRefused, match="has records but no manifest"):
        stage1_rerun(tiny_checkpoints, run, tmp_path)


def test_greedy_loader_refuses_other_settings(tiny_checkpoints, finished, tmp_path):
    run = copy_of(finished, tmp_path)
    flags = [*model_flags(tiny_checkpoints), "--question-file", str(tiny_checkpoints.question_file),
             "--image-folder", str(tiny_checkpoints.images), "--answers-file", str(run / "greedy.jsonl"),
             "--max-new-tokens", "3"]
    for extra, named in [(["--temperature", "0.5"], "temperature: 0.0 -> 0.5"),
                         (["--temperature", "0", "--conv-mode", "llava_v1"], "conv_mode: 'vicuna_v1' -> 'llava_v1'")]:
        with pytest.raises(ResumeRefused, match="other settings") as refused:
            llava_loader.main([*flags, *extra])
        assert named in str(refused.value)
    # a stage-1 answers file is another tool's output
    with pytest.raises(ResumeRefused, match=r"tool: semantic_entropy.model_vqa_loader -> llava.eval.model_vqa_loader"):
        llava_loader.main([*flags[:-4], "--answers-file", str(run / "a.jsonl"), "--temperature", "0",
                           "--max-new-tokens", "3"])


def pass_flags(tiny, run, output):
    return [*model_flags(tiny), "--image-folder", str(tiny.images), "--generations-file",
            str(run / "a.generations.jsonl"), "--output-file", str(run / output)]


@pytest.mark.parametrize("tool,output,extra,named", [
    (p_true, "ptrue.jsonl", ["--conv-mode", "llava_v1"], "conv_mode: 'vicuna_v1' -> 'llava_v1'"),
    (p_true, "ptrue.jsonl", ["--dtype", "bfloat16"], "dtype: 'float32' -> 'bfloat16'"),
    (vision_probes, "probes.jsonl", ["--mask-fraction", "0.5"], "mask_fraction: 0.25 -> 0.5"),
    (vision_probes, "probes.jsonl", ["--mask-fraction", "0.25", "--seed", "2"], "seed: 0 -> 2"),
    (vision_probes, "probes.jsonl", ["--mask-fraction", "0.25", "--layers", "0:1"], "layers: null -> '0:1'"),
    (baseline_probes, "baselines.jsonl", ["--vauq-mask-ratio", "0.2"], "vauq_mask_ratio: null -> 0.2"),
    (baseline_probes, "baselines.jsonl", ["--vl-temperature", "0.5"], "vl_temperature: null -> 0.5"),
    (baseline_probes, "baselines.jsonl", ["--seed", "3"], "seed: 0 -> 3"),
])
def test_passes_refuse_other_settings(tiny_checkpoints, finished, tmp_path, tool, output, extra, named):
    run = copy_of(finished, tmp_path)
    before = snapshot(run)
    with pytest.raises(ResumeRefused, match="other settings") as refused:
        tool.main([*pass_flags(tiny_checkpoints, run, output), *extra])
    assert named in str(refused.value)
    assert snapshot(run) == before


def changed_generations(run):
    """Stage 1's output with one greedy answer edited: the passes' input changed."""
    path = run / "a.generations.jsonl"
    records = read_jsonl(str(path))
    records[0]["greedy"]["text"] = "Maybe"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.mark.parametrize("tool,output,extra", [(p_true, "ptrue.jsonl", []),
                                               (vision_probes, "probes.jsonl", ["--mask-fraction", "0.25"]),
                                               (baseline_probes, "baselines.jsonl", [])])
def test_passes_refuse_a_changed_input(tiny_checkpoints, finished, tmp_path, tool, output, extra):
    run = copy_of(finished, tmp_path)
    changed_generations(run)
    with pytest.raises(ResumeRefused, match="generations_file: content changed"):
        tool.main([*pass_flags(tiny_checkpoints, run, output), *extra])


def test_passes_refuse_answers_of_another_conv_mode(tiny_checkpoints, finished, tmp_path):
    run = copy_of(finished, tmp_path)
    with pytest.raises(ValueError, match="answered with --conv-mode vicuna_v1, this pass uses llava_v1"):
        p_true.main([*pass_flags(tiny_checkpoints, run, "ptrue_llava.jsonl"), "--conv-mode", "llava_v1"])


@pytest.mark.parametrize("extra,named", [
    (["--judge", "nli"], "judge: 'exact' -> 'nli'"),
    (["--non-strict"], "strict: true -> false"),
    (["--measures", "naive_entropy"], "measures:"),
])
def test_stage2_refuses_other_settings(finished, tmp_path, capsys, extra, named):
    run = copy_of(finished, tmp_path)
    before = snapshot(run)
    judge_model = ["--judge-model", str(run)] if "nli" in extra else []  # refused before it would load
    code = compute_se_myself.main(["--generations-file", str(run / "a.generations.jsonl"), "--output-file",
                                   str(run / "u.jsonl"), *extra, *judge_model])
    err = capsys.readouterr().err
    assert code == 1 and named in err and len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert snapshot(run) == before


def test_stage2_refuses_a_changed_generations_file(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    changed_generations(run)
    assert compute_se_myself.main(["--generations-file", str(run / "a.generations.jsonl"), "--output-file",
                                   str(run / "u.jsonl")]) == 1
    assert "generations_file: content changed" in capsys.readouterr().err


def test_attention_refuses_other_settings(tiny_checkpoints, finished, tmp_path):
    run = copy_of(finished, tmp_path)
    flags = [*model_flags(tiny_checkpoints), "--question-file", str(tiny_checkpoints.question_file),
             "--image-folder", str(tiny_checkpoints.images), "--output-dir", str(run / "attention")]
    for extra, named in [(["--max-new-tokens", "3", "--head-reduce", "max"], "head_reduce: 'mean' -> 'max'"),
                         (["--max-new-tokens", "3", "--layers", "0:1"], "layers: null -> '0:1'"),
                         (["--max-new-tokens", "4"], "max_new_tokens: 3 -> 4"),
                         (["--max-new-tokens", "3", "--conv-mode", "llava_v1"], "conv_mode:")]:
        with pytest.raises(ResumeRefused, match="other settings") as refused:
            visualize_attention.main([*flags, *extra])
        assert named in str(refused.value)


# --- the writer lock -----------------------------------------------------------------------


def test_a_second_writer_is_refused_at_once(tiny_checkpoints, tmp_path):
    answers = tmp_path / "a.jsonl"
    with OutputLock(str(tmp_path / "a.generations.jsonl")):
        with pytest.raises(OutputLocked, match=rf"being written by pid {os.getpid()} on "):
            stage1.main(stage1_flags(tiny_checkpoints, answers))
    assert not answers.exists()  # refused before anything was written
    with OutputLock(str(tmp_path / "u.jsonl")):
        assert is_locked(str(tmp_path / "u.jsonl")).startswith(f"pid {os.getpid()}")
    assert is_locked(str(tmp_path / "u.jsonl")) is None and not (tmp_path / "u.jsonl.lock").exists()


def test_readers_refuse_a_file_still_being_written(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    with OutputLock(str(run / "a.generations.jsonl")):
        assert compute_se_myself.main(["--generations-file", str(run / "a.generations.jsonl"), "--output-file",
                                       str(run / "u2.jsonl")]) == 1
    assert "is still being written" in capsys.readouterr().err


HOLD_LOCK = """
import sys, time
from semantic_entropy.runs.lock import OutputLock
lock = OutputLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_a_killed_writers_lock_is_taken_over(tmp_path):
    output = str(tmp_path / "g.jsonl")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, output], stdout=subprocess.PIPE, text=True,
                              cwd=REPO, env={**os.environ, "PYTHONPATH": REPO})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLocked, match=rf"pid {holder.pid} "):
            OutputLock(output).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert os.path.exists(output + ".lock")  # the dead writer left its lock file behind
    lock = OutputLock(output).acquire()
    try:
        assert lock.taken_over.startswith(f"pid {holder.pid} ")
        assert is_locked(output).startswith(f"pid {os.getpid()} ")
    finally:
        lock.release()


# --- defaults, help, one-line errors ----------------------------------------------------------


def test_every_tool_defaults_to_vicuna_v1_and_shows_it():
    required = {
        llava_loader: ["--model-path", "M", "--image-folder", "I", "--question-file", "Q", "--answers-file", "A"],
        stage1: ["--model-path", "M", "--image-folder", "I", "--question-file", "Q", "--answers-file", "A"],
        p_true: ["--model-path", "M", "--image-folder", "I", "--generations-file", "G", "--output-file", "O"],
        vision_probes: ["--model-path", "M", "--image-folder", "I", "--generations-file", "G", "--output-file", "O"],
        baseline_probes: ["--model-path", "M", "--image-folder", "I", "--generations-file", "G", "--output-file", "O"],
        visualize_attention: ["--model-path", "M", "--output-dir", "D"],
    }
    assert DEFAULT_CONV_MODE == "vicuna_v1"
    for module, flags in required.items():
        parser = module.build_parser()
        assert parser.parse_args(flags).conv_mode == "vicuna_v1", module.__name__
        assert "(default: vicuna_v1)" in " ".join(parser.format_help().split()), module.__name__


def test_legacy_underscore_flags_and_hyphenated_spellings_are_one_flag():
    base = ["--model-path", "M", "--image-folder", "I", "--question-file", "Q", "--answers-file", "A"]
    parser = stage1.build_parser()
    for a, b in [("--max_new_tokens", "--max-new-tokens"), ("--top_p", "--top-p"), ("--top_k", "--top-k"),
                 ("--num_beams", "--num-beams"), ("--conv_mode", "--conv-mode")]:
        value = "llava_v1" if "conv" in a else "7"
        assert vars(parser.parse_args([*base, a, value])) == vars(parser.parse_args([*base, b, value]))


def one_line_error(capsys, main, argv) -> str:
    assert run_main(lambda: main(argv)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_user_errors_are_one_line(tiny_checkpoints, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert f"question file {empty} has no questions" in one_line_error(capsys, stage1.main, [
        *model_flags(tiny_checkpoints), "--question-file", str(empty), "--image-folder", str(tiny_checkpoints.images),
        "--answers-file", str(tmp_path / "a.jsonl")])
    missing = str(tmp_path / "nope.jsonl")
    assert f"question file {missing} does not exist" in one_line_error(
        capsys, llava_loader.main, [*model_flags(tiny_checkpoints), "--question-file", missing, "--image-folder",
                                    "I", "--answers-file", str(tmp_path / "a.jsonl")])
    assert "generations file" in one_line_error(capsys, p_true.main, [
        *model_flags(tiny_checkpoints), "--image-folder", "I", "--generations-file", missing, "--output-file",
        str(tmp_path / "o.jsonl")])
    assert "give either --image-file" in one_line_error(capsys, visualize_attention.main, [
        *model_flags(tiny_checkpoints), "--output-dir", str(tmp_path / "att")])


def test_command_line_errors_are_one_line_without_traceback(tiny_checkpoints, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoints.original, broken)
    shard = sorted(broken.glob("*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:100])  # truncated by a failed copy
    runs = {
        "--num-samples 0": ["-m", "semantic_entropy.model_vqa_loader", *stage1_flags(tiny_checkpoints,
                            tmp_path / "a.jsonl")[:-2], "--num-samples", "0"],
        "truncated weights": ["-m", "semantic_entropy.model_vqa_loader", *stage1_flags(
            tiny_checkpoints, tmp_path / "b.jsonl")[2:], "--model-path", str(broken)],
        "missing labels": ["-m", "llava.eval.eval_pope", "--annotation-dir", str(tmp_path / "none"),
                           "--question-file", str(tiny_checkpoints.question_file), "--result-file", str(tmp_path)],
    }
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}
    for what, argv in runs.items():
        done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        assert done.returncode in (1, 2) and len(lines) == 1 and lines[0].startswith("error: "), (what, done.stderr)
        assert "Traceback" not in done.stderr
        if what == "truncated weights":
            assert str(shard) in lines[0]
