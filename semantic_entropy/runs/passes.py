"""Plumbing shared by the passes that add fields to stage 1's generations (p_true, vision_probes).

Each pass reads the generations file, computes its fields for the questions not yet in its
output file (so a rerun resumes), appends whole records, and finally puts the output in the
generations file's question order.
"""

from __future__ import annotations

import argparse
import os

from llava.eval.model_vqa_loader import add_model_args
from llava.jsonl_io import completed_ids, iter_jsonl
from semantic_entropy.runs.distributed import write_in_order


def add_pass_args(parser: argparse.ArgumentParser, adds: str) -> None:
    """Model flags, --image-folder, --generations-file, --output-file and --conv-mode."""
    add_model_args(parser)
    parser.add_argument("--image-folder", required=True)
    parser.add_argument("--generations-file", required=True)
    parser.add_argument("--output-file", required=True, help=f"the generations with {adds} added")
    parser.add_argument("--conv-mode", default="vicuna_v1")


def pending_records(generations_file: str, output_file: str) -> dict:
    """question_id -> generations record, for the questions not yet in `output_file`."""
    if os.path.abspath(output_file) == os.path.abspath(generations_file):
        raise SystemExit("--output-file must differ from --generations-file")
    done = completed_ids(output_file)  # also cuts a line a crash left half-written
    return {r["question_id"]: r for _, r in iter_jsonl(generations_file) if r["question_id"] not in done}


def put_in_question_order(output_file: str, generations_file: str) -> None:
    """Rewrite the output in the generations file's order (batches follow images, not the file)."""
    order = {qid: rank for rank, qid in enumerate(r["question_id"] for _, r in iter_jsonl(generations_file))}
    write_in_order(output_file, [r for _, r in iter_jsonl(output_file)], order)
    print(f"wrote {os.path.abspath(output_file)}")
