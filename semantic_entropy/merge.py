"""Join chunk files (answers or generations) into one, checked: no missing and no duplicate ids.

python -m semantic_entropy.merge --question-file Q --output-file OUT CHUNK [CHUNK ...] [--allow-partial]

For the outputs of `--num-chunks/--chunk-idx` runs. Records are written in question-file order;
the chunks' manifests must agree on every setting but the chunk index, and OUT gets its own.
"""

from __future__ import annotations

import sys

from llava.cli import new_parser, run_main
from semantic_entropy.runs.merging import merge_chunks


def main(argv=None) -> None:
    parser = new_parser(__doc__)
    parser.add_argument("--question-file", required=True, help="the question file the chunks were cut from")
    parser.add_argument("--output-file", required=True, help="the merged file to write (must not exist)")
    parser.add_argument("--allow-partial", action="store_true", help="report missing ids instead of failing")
    parser.add_argument("chunks", nargs="+", help="the chunk files, in any order")
    args = parser.parse_args(argv)
    count = merge_chunks(args.question_file, args.chunks, args.output_file, args.allow_partial)
    print(f"wrote {args.output_file} ({count} records merged)")


if __name__ == "__main__":
    sys.exit(run_main(main))
