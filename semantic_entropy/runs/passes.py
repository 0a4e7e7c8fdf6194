"""Plumbing shared by the passes that add fields to stage 1's generations (p_true, vision_probes).

Each pass reads the generations file, computes its fields for the questions not yet in its
output file, appends whole records, and finally puts the output in the generations file's
question order. The output is a `RecordOutput`: locked, its settings and its input's content
checked on resume, with one manifest format.
"""

from __future__ import annotations

import argparse
import os
from contextlib import contextmanager

from llava.cli import add_conv_mode_arg, add_model_args, check_readable_file, model_settings, positive_int
from llava.jsonl_io import iter_jsonl
from semantic_entropy.runs.lock import is_locked
from semantic_entropy.runs.record_output import RecordOutput, RunSpec, finish_outputs, open_outputs
from semantic_entropy.sampling.prefix_groups import group_questions, plan_batches


def add_pass_args(parser: argparse.ArgumentParser, adds: str) -> None:
    """Model flags, --image-folder, --generations-file, --output-file and --conv-mode."""
    add_model_args(parser)
    parser.add_argument("--image-folder", "--image_folder", dest="image_folder", required=True,
                        help="folder the generations' `image` fields are relative to")
    parser.add_argument("--generations-file", required=True, help="stage-1 generations (or an earlier pass's output)")
    parser.add_argument("--output-file", required=True, help=f"the generations with {adds} added")
    add_conv_mode_arg(parser)


def add_batching_args(parser: argparse.ArgumentParser, batch_size: int, images_per_batch: int, images_help: str,
                      workers: bool = True) -> None:
    """--batch-size (questions), --images-per-batch and, where the pass loads images itself, --num-workers."""
    parser.add_argument("--batch-size", type=positive_int, default=batch_size, help="questions per batch")
    parser.add_argument("--images-per-batch", type=positive_int, default=images_per_batch, help=images_help)
    if workers:
        parser.add_argument("--num-workers", type=int, default=None, help="image loaders; None = 4 on CUDA, 0 on CPU")


def planned_pass_batches(records: dict, tokenizer, args) -> tuple[list[dict], list]:
    """The questions still owed by a pass (question_id, image and the stage-1 prompt as text) and their
    prefix-shared batches of `--batch-size` questions and `--images-per-batch` images."""
    pending = [{"question_id": qid, "image": r["image"], "text": r["prompt"]} for qid, r in records.items()]
    planned = plan_batches(group_questions(pending, tokenizer, args.conv_mode), args.batch_size, args.images_per_batch)
    return pending, planned


def pass_spec(tool: str, args, execution: dict | None = None, **pass_settings) -> RunSpec:
    return RunSpec(
        tool=tool,
        settings={**model_settings(args), "image_folder": os.path.abspath(args.image_folder),
                  "conv_mode": args.conv_mode, **pass_settings},
        inputs={"generations_file": args.generations_file},
        execution={"device": args.device, **(execution or {})},
    )


def check_pass_input(generations_file: str, output_file: str) -> str:
    generations_file = check_readable_file(generations_file, "generations file")
    if os.path.abspath(os.path.expanduser(output_file)) == os.path.abspath(generations_file):
        raise ValueError("--output-file must differ from --generations-file")
    holder = is_locked(generations_file)
    if holder:
        raise ValueError(f"{generations_file} is still being written ({holder}); run this pass when it is done")
    return generations_file


def read_pending(generations_file: str, done: set, conv_mode: str) -> dict:
    """question_id -> generations record not yet in the output; a record sampled under another
    conv mode is refused, since the pass would probe a prompt the answers were not given to."""
    pending = {}
    for line_number, record in iter_jsonl(generations_file):
        for field in ("question_id", "image", "prompt", "greedy"):
            if field not in record:
                raise ValueError(f"{generations_file}:{line_number}: record lacks {field!r} (not stage-1 generations?)")
        recorded = record.get("conv_mode")
        if recorded is not None and recorded != conv_mode:
            raise ValueError(f"{generations_file}:{line_number}: question_id {record['question_id']!r} was answered "
                             f"with --conv-mode {recorded}, this pass uses {conv_mode}; pass --conv-mode {recorded}")
        if record["question_id"] not in done:
            pending[record["question_id"]] = record
    return pending


@contextmanager
def open_pass(args, spec: RunSpec):
    """Yield (output, pending records); on a clean exit, order the output and complete its manifest."""
    generations_file = check_pass_input(args.generations_file, args.output_file)
    output = RecordOutput(args.output_file, spec)
    with open_outputs([output]):
        pending = read_pending(generations_file, output.done, args.conv_mode)
        if output.done:
            print(f"resuming: {len(output.done)} questions already in {output.path}")
        yield output, pending
        order = {qid: rank for rank, qid in enumerate(r["question_id"] for _, r in iter_jsonl(generations_file))}
        [count] = finish_outputs([output], output.info, order)
    print(f"wrote {os.path.abspath(output.path)} ({count} questions)")
