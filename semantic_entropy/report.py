"""The results browser: one self-contained HTML page for a run of the pipeline.

    python -m semantic_entropy.report --run-dir DIR [--attention-dir A] [--output FILE]

DIR is a folder of scripts/pope_se.sh (or scripts/method_study.sh): answers.jsonl,
generations.jsonl, uncertainty_<judge>.jsonl and eval_<judge>/ (stage 3's metrics.json and
per_question.csv). The page holds every question in a table (filter by split, correctness,
answer direction and text; sort by any column), a detail pane (image with the attention map
of A, a semantic_entropy.visualize_attention folder, when given; the greedy answer's token
log-probs; samples grouped by meaning cluster; every score with its rank), the metrics with
their intervals and paired differences, ROC and rejection curves (a click on a point selects
the questions at that threshold) and the settings of every manifest. It needs no server and
no network: open it from a file:// URL. Writes FILE and FILE.manifest.json.

A run without labels (stage 3 without --annotation-dir: distributions.json and a
per_question.csv of scores) gets the same table and details with no label, correctness or
answer direction anywhere, a filter by score range in their place, and stage 3's score
distributions (statistics and histograms per split; a click on a bar selects its questions)
in place of the metrics and curves.
"""

from __future__ import annotations

import os
import sys

from llava.cli import new_parser, positive_int, run_main
from semantic_entropy.browser.build import ReportOptions, build_report


def build_parser():
    parser = new_parser(__doc__)
    parser.add_argument("--run-dir", required=True, help="the run's folder (answers, generations, uncertainty, eval_*/)")
    parser.add_argument("--output", default=None, help="the HTML file to write; None = <run-dir>/report.html")
    parser.add_argument("--eval-dir", default=None,
                        help="stage 3's output folder; None = the run folder's only eval_<judge>/")
    parser.add_argument("--attention-dir", default=None,
                        help="a visualize_attention output folder: its statistics, and its maps where saved "
                             "(--save-maps), on the images")
    parser.add_argument("--generations-file", default=None,
                        help="stage 1's generations; None = the file stage 2's manifest names, else generations.jsonl")
    parser.add_argument("--image-folder", default=None,
                        help="folder of the questions' images; None = the one stage 1 recorded")
    parser.add_argument("--thumbnail-size", type=positive_int, default=320,
                        help="longest side in pixels of the embedded image thumbnails")
    parser.add_argument("--link-images", action="store_true",
                        help="link the image files (relative to the page) instead of embedding thumbnails")
    parser.add_argument("--tokenizer", default="auto",
                        help="tokenizer folder naming the greedy answer's tokens; auto = stage 1's model folder, "
                             "none = show token ids")
    parser.add_argument("--title", default=None, help="page title; None = 'Results: <run folder name>'")
    return parser


def run(args) -> dict:
    output = args.output or os.path.join(args.run_dir, "report.html")
    options = ReportOptions(run_dir=args.run_dir, output=output, eval_dir=args.eval_dir,
                            attention_dir=args.attention_dir, generations_file=args.generations_file,
                            image_folder=args.image_folder, thumbnail_size=args.thumbnail_size,
                            link_images=args.link_images, tokenizer=args.tokenizer, title=args.title)
    result = build_report(options)
    for note in result["notes"]:
        print(f"note: {note}")
    print(f"wrote {result['output']}: {result['questions']} questions, {result['bytes'] / 1e6:.1f} MB "
          "(open it in a web browser)")
    return result


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())

