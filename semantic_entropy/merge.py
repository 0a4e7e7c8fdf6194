"""Join chunk files (answers or generations) into one, checked: no missing and no duplicate ids.

python -m semantic_entropy.merge --question-file Q --output-file OUT CHUNK [CHUNK ...] [--allow-partial]

For the outputs of `--num-chunks/--chunk-idx` runs. Records are written in question-file order.
"""

from __future__ import annotations

import argparse
import os

from llava.eval.vqa_data import load_questions
from llava.jsonl_io import JsonlError, completed_ids, iter_jsonl
from semantic_entropy.runs.distributed import write_in_order


def merge_chunks(question_file: str, chunk_files: list[str], output_file: str, allow_partial: bool = False) -> int:
    """Merge; returns the number of records. Gaps and duplicates are errors naming the ids."""
    questions = load_questions(question_file)
    order = {q["question_id"]: rank for rank, q in enumerate(questions)}
    seen: dict = {}
    records = []
    for chunk in chunk_files:
        if not os.path.exists(chunk):
            raise FileNotFoundError(f"chunk file {chunk} does not exist")
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
    if os.path.exists(output_file):
        raise FileExistsError(f"{output_file} exists; merge writes a new file")
    write_in_order(output_file, records, order)
    return len(records)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--question-file", required=True)
    parser.add_argument("--output-file", required=True)
    parser.add_argument("--allow-partial", action="store_true", help="report missing ids instead of failing")
    parser.add_argument("chunks", nargs="+")
    args = parser.parse_args(argv)
    count = merge_chunks(args.question_file, args.chunks, args.output_file, args.allow_partial)
    print(f"merged {count} records into {args.output_file}")


if __name__ == "__main__":
    main()
