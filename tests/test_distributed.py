"""Stage 1 over torchrun (2 gloo ranks on the CPU) and the chunk merge: same files as one process."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from llava.jsonl_io import JsonlError, read_jsonl
from semantic_entropy import model_vqa_loader as stage1
from semantic_entropy import visualize_attention
from semantic_entropy.runs.merging import merge_chunks
from tests.generation_checks import assert_same_generations

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(tiny, out, *extra):
    return ["--model-path", str(tiny.original), "--question-file", str(tiny.question_file),
            "--image-folder", str(tiny.images), "--answers-file", str(out / "answers.jsonl"), "--temperature", "0",
            "--conv-mode", "vicuna_v1", "--device", "cpu", "--max_new_tokens", "4", "--num-samples", "4", *extra]


def _torchrun(tiny, out, *extra, module="semantic_entropy.model_vqa_loader", args=None):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(_free_port()), "-m", module, *(args if args is not None else _args(tiny, out, *extra))]
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("mode", [[], ["--no-prefix-sharing", "--batch-size", "2"]])
def test_two_ranks_write_the_files_of_one_process(tiny_checkpoints, tmp_path, mode):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    stage1.main(_args(tiny_checkpoints, one, *mode))
    _torchrun(tiny_checkpoints, two, *mode)
    assert_same_generations(read_jsonl(str(one / "answers.generations.jsonl")), read_jsonl(str(two / "answers.generations.jsonl")))
    answers_one, answers_two = read_jsonl(str(one / "answers.jsonl")), read_jsonl(str(two / "answers.jsonl"))
    assert [(a["question_id"], a["text"]) for a in answers_one] == [(a["question_id"], a["text"]) for a in answers_two]
    assert not [name for name in os.listdir(two) if name.endswith(".part")]  # parts merged and removed


def test_resumed_run_merges_leftover_parts_and_finishes_the_rest(tiny_checkpoints, tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    stage1.main(_args(tiny_checkpoints, full))
    records = read_jsonl(str(full / "answers.generations.jsonl"))
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    # A two-rank run died: rank 1 had written one record and half of another; rank 0 nothing.
    part = crashed / "answers.generations.jsonl.rank1-of2.part"
    part.write_text(json.dumps(records[1]) + "\n" + json.dumps(records[3])[:40])
    for name in ("answers.generations.jsonl", "answers.jsonl"):  # the crashed run had written its manifests
        shutil.copy(full / f"{name}.manifest.json", crashed / f"{name}.manifest.json")
    stage1.main(_args(tiny_checkpoints, crashed))
    assert_same_generations(records, read_jsonl(str(crashed / "answers.generations.jsonl")))
    assert sorted(a["question_id"] for a in read_jsonl(str(crashed / "answers.jsonl"))) == [r["question_id"] for r in records]
    assert not part.exists()


def test_merge_joins_chunks_in_order_and_refuses_gaps_and_duplicates(tiny_checkpoints, tmp_path):
    chunks = []
    for k in range(2):
        out = tmp_path / f"c{k}"
        out.mkdir()
        stage1.main(_args(tiny_checkpoints, out, "--num-chunks", "2", "--chunk-idx", str(k)))
        chunks.append(str(out / "answers.jsonl"))
    merged = tmp_path / "merged.jsonl"
    assert merge_chunks(str(tiny_checkpoints.question_file), chunks[::-1], str(merged)) == 5
    assert [r["question_id"] for r in read_jsonl(str(merged))] == [100, 101, 102, 103, 104]
    with pytest.raises(JsonlError, match=r"2 question ids have no record.*\[103, 104\]"):
        merge_chunks(str(tiny_checkpoints.question_file), chunks[:1], str(tmp_path / "gap.jsonl"))
    with pytest.raises(JsonlError, match="duplicate question_id 100"):
        merge_chunks(str(tiny_checkpoints.question_file), [chunks[0], chunks[0]], str(tmp_path / "dup.jsonl"))
    merge_chunks(str(tiny_checkpoints.question_file), chunks[:1], str(tmp_path / "partial.jsonl"), allow_partial=True)
    assert len(read_jsonl(str(tmp_path / "partial.jsonl"))) == 3


def _assert_close(a, b, where: str, atol: float = 1e-5) -> None:
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, abs=atol), where
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for x, y in zip(a, b):
            _assert_close(x, y, where, atol)
    else:
        assert a == b, where


def _attention_args(tiny, out):
    return ["--model-path", str(tiny.original), "--device", "cpu", "--max-new-tokens", "3",
            "--question-file", str(tiny.question_file), "--image-folder", str(tiny.images),
            "--output-dir", str(out), "--batch-size", "2", "--max-pages", "3"]


def test_attention_batch_mode_over_two_ranks_writes_the_table_of_one_process(tiny_checkpoints, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    visualize_attention.main(_attention_args(tiny_checkpoints, one))
    # A crashed two-rank run left rank 1's first row behind: it is folded in, not computed again.
    rows_one = read_jsonl(str(one / "attention_stats.jsonl"))
    two.mkdir()
    (two / "attention_stats.jsonl.rank1-of2.part").write_text(json.dumps({**rows_one[2], "marker": 1}) + "\n")
    shutil.copy(one / "attention_stats.jsonl.manifest.json", two / "attention_stats.jsonl.manifest.json")
    _torchrun(tiny_checkpoints, two, module="semantic_entropy.visualize_attention",
              args=_attention_args(tiny_checkpoints, two))
    rows_two = read_jsonl(str(two / "attention_stats.jsonl"))
    assert [r["question_id"] for r in rows_two] == [r["question_id"] for r in rows_one]  # question order
    assert rows_two[2].pop("marker") == 1
    for a, b in zip(rows_one, rows_two):  # same batches: same tokens, numbers within float rounding
        assert a.keys() == b.keys()
        for key in a:
            _assert_close(a[key], b[key], f"question {a['question_id']} {key}")
    pages = lambda d: sorted(p.name for p in (d / "pages").iterdir())  # noqa: E731
    assert len(pages(one)) == 3 and len(pages(two)) == 3  # --max-pages counts over all ranks
    csv_ids = [line.split(",")[0] for line in (two / "attention_stats.csv").read_text().splitlines()[1:] if line[:1].isdigit()]
    assert csv_ids == [str(r["question_id"]) for r in rows_one]
    assert not [name for name in os.listdir(two) if name.endswith(".part")]
