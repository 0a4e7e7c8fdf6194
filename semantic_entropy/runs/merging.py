"""Joining the files of `--num-chunks/--chunk-idx` runs into one, checked against the question file.

The chunks must come from one setting: their manifests may differ only in `chunk_idx`. The
merged file gets a manifest of its own (the common settings, `chunk_idx` dropped, the chunks
listed as inputs).
"""

from __future__ import annotations

import os

from llava.eval.vqa_data import load_questions
from llava.jsonl_io import JsonlError, completed_ids, iter_jsonl
from semantic_entropy.runs.distributed import write_in_order
from semantic_entropy.runs.manifest import (describe_inputs, manifest_path, new_manifest, read_manifest,
                                            settings_differences, write_manifest)

CHUNK_SETTINGS = ("chunk_idx",)


def common_chunk_manifest(chunk_files: list[str]) -> dict | None:
    """The chunks' shared manifest without the chunk index; None when no chunk has one.

    Chunks with and without manifests, or with settings that differ beyond the chunk index,
    are an error naming the files and the differences.
    """
    manifests = {chunk: read_manifest(manifest_path(chunk)) for chunk in chunk_files}
    without = [chunk for chunk, manifest in manifests.items() if manifest is None]
    if len(without) == len(chunk_files):
        return None
    if without:
        raise ValueError(f"chunk(s) {without} have no manifest while others do; their settings cannot be checked")

    def comparable(manifest: dict) -> dict:
        settings = {k: v for k, v in manifest.get("settings", {}).items() if k not in CHUNK_SETTINGS}
        return {**manifest, "settings": settings}

    first_chunk, first = chunk_files[0], comparable(manifests[chunk_files[0]])
    for chunk in chunk_files[1:]:
        differences = settings_differences(first, comparable(manifests[chunk]))
        if differences:
            raise ValueError(f"{chunk} was written with other settings than {first_chunk}: {'; '.join(differences)}")
    return first


def merge_chunks(question_file: str, chunk_files: list[str], output_file: str, allow_partial: bool = False) -> int:
    """Merge; returns the number of records. Gaps and duplicates are errors naming the ids."""
    questions = load_questions(question_file)
    order = {q["question_id"]: rank for rank, q in enumerate(questions)}
    for chunk in chunk_files:
        if not os.path.exists(chunk):
            raise FileNotFoundError(f"chunk file {chunk} does not exist")
    if os.path.exists(output_file):
        raise FileExistsError(f"{output_file} exists; merge writes a new file")
    common = common_chunk_manifest(chunk_files)
    seen: dict = {}
    records = []
    for chunk in chunk_files:
        completed_ids(chunk)  # cuts a half-written last line
        for line_number, record in iter_jsonl(chunk):
            qid = record.get("question_id")
            if qid in seen:
                raise JsonlError(f"{chunk}:{line_number}: duplicate question_id {qid!r} (also in {seen[qid]})")
            if qid not in order:
                raise JsonlError(f"{chunk}:{line_number}: question_id {qid!r} is not in {question_file}")
            seen[qid] = chunk
            records.append(record)
    missing = [q["question_id"] for q in questions if q["question_id"] not in seen]
    if missing and not allow_partial:
        raise JsonlError(f"{len(missing)} question ids have no record in the chunks, e.g. {missing[:10]}")
    write_in_order(output_file, records, order)
    if common is not None:
        inputs = {**common.get("inputs", {}),
                  **describe_inputs({f"chunk_{i}": chunk for i, chunk in enumerate(chunk_files)})}
        merged = new_manifest(common["tool"], output_file, common["settings"], inputs, common.get("execution"),
                              common.get("details"))
        merged.update(status="complete" if not missing else "partial", records=len(records))
        write_manifest(manifest_path(output_file), merged)
    return len(records)
