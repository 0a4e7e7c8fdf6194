"""Stage 3: join uncertainty scores with POPE correctness and report how well they flag errors;
without labels, report how the scores are distributed.

    python -m semantic_entropy.eval_auroc --uncertainty-file U [U2 ...] --answers-file A \\
        --annotation-dir D --question-file Q --output-dir O \\
        [--labels L1 L2 ...] [--measures NAME ...] [--bootstrap 1000] [--seed 0] \\
        [--cluster-by image|question] [--compare-to MEASURE] [--confidence 0.95] \\
        [--coverages 0.8 0.9 0.95] [--allow-partial] [--no-plots] [--bins 20]

    python -m semantic_entropy.eval_auroc --uncertainty-file U [U2 ...] --output-dir O \\
        [--question-file Q] [--measures NAME ...] [--bins 20]      # no labels

Without --annotation-dir there are no labels (open-ended question files: `question_id`,
`image`, `text`): per score column and split ("all", then each category present), n, mean,
std, min, the 5/25/50/75/95% quantiles, max and a histogram whose bins every split of the
column shares (`semantic_entropy.evaluation.distributions`). With --question-file the
questions' order and categories come from it, and every uncertainty file must score exactly
its questions (a subset with --allow-partial). Writes distributions.json, distributions.csv,
distributions.md (printed), per_question.csv (each question's id, split and scores),
score_histograms.png and manifest.json. With labels the same distributions.json is written
beside the metrics.

The greedy answers (A) are joined with the questions and POPE labels by `join_pope`, the one
join of `llava.eval.eval_pope`; `is_false` = 1 where the answer, parsed as eval_pope parses it,
is wrong. Each uncertainty file (stage 2: one line per question with `question_id`,
`category` and `scores`) must hold exactly the answered question_ids, once each.

Splits: POPE's (adversarial, random, popular), "all", then "yes_answers" and "no_answers" (the
greedy answer's direction: their errors are false "yes" and misses). Per split: n, errors,
accuracy, and for every measure of every file AUROC, AUPR of the errors, AURAC, PRR and
accuracy at each coverage (`semantic_entropy.evaluation.metrics`), with percentile bootstrap
intervals. A resample draws the split's images with replacement and keeps all their questions
(--cluster-by image, the default: POPE asks 18 questions of an image), or draws questions
(--cluster-by question). Every measure is also compared with a reference (--compare-to): the
difference of AUROC, AUPR, AURAC and PRR on the same resamples, its interval and a two-sided
bootstrap p-value (`semantic_entropy.evaluation.report`).

Several files go into one comparison: a column is named by the measure alone when there is one
file, else "label/measure" (label: --labels, default each file's stem). Writes to O:
metrics.json, metrics.csv (one row per split and column), metrics.md (printed with --print full;
--print headline prints AUROC on all questions and on the adversarial split, one line a column),
per_question.csv (the join: image, label, parsed answer, is_false and scores of each question),
roc_curves.png, rejection_curves.png, score_distributions.png, and manifest.json.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Sequence

from llava.eval.eval_pope import join_pope
from llava.jsonl_io import read_keyed_jsonl, write_json_atomic
from llava.cli import check_readable_file, new_parser, run_main
from semantic_entropy.evaluation import metrics as m
from semantic_entropy.evaluation.distributions import ScoredQuestions, distributions, join_unlabelled, \
    markdown_distributions, per_question_scores
from semantic_entropy.evaluation.distributions import csv_rows as distribution_rows
from semantic_entropy.evaluation.joining import check_labels, default_labels, join_scores, reference_column
from semantic_entropy.evaluation.plots import plot_score_histograms, plotted_columns, write_plots
from semantic_entropy.evaluation.report import EvalSettings, evaluate
from semantic_entropy.evaluation.splits import CLUSTER_UNITS, resolve_cluster_unit
from semantic_entropy.evaluation.tables import csv_rows, headline_lines, markdown_report, per_question_rows
from semantic_entropy.runs.manifest import describe_inputs, new_manifest, write_manifest


def write_csv(path: str, rows: Sequence[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def build_parser() -> argparse.ArgumentParser:
    """The command line; `--help` shows every option's default."""
    parser = new_parser(__doc__)
    parser.add_argument("--uncertainty-file", nargs="+", required=True, metavar="U",
                        help="stage-2 uncertainty JSON lines; several files go into one comparison")
    parser.add_argument("--answers-file", default=None,
                        help="greedy answers in LLaVA's format, stage 1; needed with --annotation-dir")
    parser.add_argument("--annotation-dir", default=None,
                        help="folder with coco_pope_<split>.json: the labels; None = no labels, distributions only")
    parser.add_argument("--question-file", default=None,
                        help="LLaVA question file (POPE's with --annotation-dir, else any, for order and categories)")
    parser.add_argument("--output-dir", required=True, help="folder for the reports")
    parser.add_argument("--labels", nargs="+", default=None,
                        help="one run label per uncertainty file")
    parser.add_argument("--measures", nargs="+", default=None, metavar="NAME",
                        help="score names to evaluate")
    parser.add_argument("--bootstrap", type=int, default=1000,
                        help="bootstrap resamples per split; 0 = no intervals")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--cluster-by", choices=CLUSTER_UNITS, default=None,
                        help="what a bootstrap resample draws with replacement: images, keeping all their "
                             "questions, or single questions; None = image when the questions name their image")
    parser.add_argument("--compare-to", default=None, metavar="MEASURE",
                        help="reference of the paired differences, a measure or label/measure; "
                             "None = yes_no_entropy when present, else semantic_entropy")
    parser.add_argument("--confidence", type=float, default=0.95, help="interval level")
    parser.add_argument("--coverages", type=float, nargs="+", default=list(m.DEFAULT_COVERAGES),
                        help="report the accuracy of the most certain fraction at each")
    parser.add_argument("--allow-partial", action="store_true",
                        help="evaluate only the answered questions of the question file")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    parser.add_argument("--max-curves", type=int, default=10,
                        help="curves per ROC / rejection panel: the columns with the highest overall AUROC")
    parser.add_argument("--print", choices=("full", "headline", "none"), default="full",
                        help="what to print: metrics.md, AUROC all/adversarial one line a column, or nothing")
    parser.add_argument("--bins", type=int, default=20, help="histogram bins of the score distributions")
    parser.add_argument("--title", default=None,
                        help="heading of metrics.md (None = 'Uncertainty vs POPE correctness') or, without "
                             "labels, of distributions.md (None = 'Uncertainty distributions')")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.bootstrap < 0:
        parser.error("--bootstrap must be >= 0")
    if not 0 < args.confidence < 1:
        parser.error("--confidence must be in (0, 1)")
    if any(not 0 < c <= 1 for c in args.coverages):
        parser.error("--coverages must be in (0, 1]")
    if args.bins < 1:
        parser.error("--bins must be at least 1")
    if args.annotation_dir is not None and (args.answers_file is None or args.question_file is None):
        parser.error("--annotation-dir (labels) needs --answers-file and --question-file")
    return args


def write_distributions(output_dir: str, scored: ScoredQuestions, bins: int) -> dict:
    """distributions.json and distributions.csv; returns the report."""
    report = distributions(scored, bins)
    write_json_atomic(os.path.join(output_dir, "distributions.json"), report)
    write_csv(os.path.join(output_dir, "distributions.csv"), distribution_rows(report, scored.columns))
    return report


def read_sources(args: argparse.Namespace) -> tuple[list[str], list[tuple[str, dict]]]:
    labels = args.labels if args.labels is not None else default_labels(args.uncertainty_file)
    check_labels(labels, args.uncertainty_file)
    return labels, [(path, read_keyed_jsonl(path, required=("scores",))) for path in args.uncertainty_file]


def run_unlabelled(args: argparse.Namespace) -> dict:
    """No labels: the score distributions; returns the distributions.json content."""
    labels, sources = read_sources(args)
    questions = None
    if args.question_file is not None:
        questions = read_keyed_jsonl(check_readable_file(args.question_file, "question file"))
    scored = join_unlabelled(sources, labels, args.measures, questions, args.allow_partial)
    os.makedirs(args.output_dir, exist_ok=True)
    report = write_distributions(args.output_dir, scored, args.bins)
    write_csv(os.path.join(args.output_dir, "per_question.csv"), per_question_scores(scored))
    markdown = markdown_distributions(report, scored.columns, args.title or "Uncertainty distributions")
    with open(os.path.join(args.output_dir, "distributions.md"), "w", encoding="utf-8") as f:
        f.write(markdown)
    if args.print == "full":
        print(markdown)
    elif args.print == "headline":
        print("\n".join(f"{c.key}: mean {report['all'][c.key]['mean']:.3f}, median {report['all'][c.key]['q50']:.3f}"
                        for c in scored.columns))
    outputs = ["distributions.json", "distributions.csv", "distributions.md", "per_question.csv"]
    if not args.no_plots:
        outputs.append(os.path.basename(plot_score_histograms(
            report, [c.key for c in scored.columns], os.path.join(args.output_dir, "score_histograms.png"))))
    inputs = {**({"question_file": args.question_file} if args.question_file else {}),
              **({"answers_file": args.answers_file} if args.answers_file else {}),
              **{f"uncertainty_file_{i}": p for i, p in enumerate(args.uncertainty_file)}}
    upstream = [p + ".manifest.json" for p in args.uncertainty_file]
    manifest = new_manifest(
        "semantic_entropy.eval_auroc", args.output_dir,
        {**{k: v for k, v in vars(args).items() if k != "print"}, "labels": labels, "mode": "distributions"},
        describe_inputs(inputs),
        details={"upstream_manifests": [os.path.abspath(p) for p in upstream if os.path.exists(p)],
                 "columns": {c.key: {"label": c.label, "measure": c.measure} for c in scored.columns},
                 "outputs": outputs})
    manifest.update(status="complete", records=len(scored.question_ids))
    write_manifest(os.path.join(args.output_dir, "manifest.json"), manifest)
    print(f"no labels (no --annotation-dir): wrote the score distributions of {len(scored.question_ids)} questions "
          f"to {os.path.join(args.output_dir, 'distributions.md')} (also {', '.join(outputs[:2] + outputs[3:])})")
    return report


def run(args: argparse.Namespace) -> dict:
    """Join, evaluate and write every report; returns the metrics.json content (without
    labels: the distributions.json content)."""
    if args.annotation_dir is None:
        return run_unlabelled(args)
    labels, sources = read_sources(args)
    records, coverage = join_pope(args.annotation_dir, args.question_file, args.answers_file, args.allow_partial)
    joined = join_scores(records, sources, labels, args.measures)
    settings = EvalSettings(args.bootstrap, args.seed, args.confidence, tuple(args.coverages),
                            cluster_unit=resolve_cluster_unit(args.cluster_by, joined),
                            reference=reference_column(joined.columns, args.compare_to))
    report = evaluate(joined, settings)

    os.makedirs(args.output_dir, exist_ok=True)
    write_json_atomic(os.path.join(args.output_dir, "metrics.json"), report)
    write_csv(os.path.join(args.output_dir, "metrics.csv"), csv_rows(report, joined.columns, settings.coverages))
    write_csv(os.path.join(args.output_dir, "per_question.csv"), per_question_rows(records, joined))
    write_distributions(args.output_dir, ScoredQuestions(joined.question_ids, joined.categories, joined.columns),
                        args.bins)
    markdown = markdown_report(report, joined.columns, settings, args.title or "Uncertainty vs POPE correctness")
    with open(os.path.join(args.output_dir, "metrics.md"), "w", encoding="utf-8") as f:
        f.write(markdown)
    if args.print == "full":
        print(markdown)
    elif args.print == "headline":
        print("\n".join(headline_lines(report)))
    figures = []
    if not args.no_plots:
        if len(plotted_columns(joined, args.max_curves)) < len(joined.columns):
            print(f"curve figures: the {args.max_curves} columns with the highest AUROC over all questions "
                  f"(--max-curves; every column is in the tables and score_distributions.png)")
        figures = write_plots(args.output_dir, joined, args.max_curves)

    upstream = [p + ".manifest.json" for p in [args.answers_file, *args.uncertainty_file]]
    settings_record = {**{k: v for k, v in vars(args).items() if k != "print"}, "labels": labels,
                       "cluster_by": settings.cluster_unit, "compare_to": settings.reference}
    manifest = new_manifest(
        "semantic_entropy.eval_auroc", args.output_dir, {**settings_record, "mode": "labels"},
        describe_inputs({"answers_file": args.answers_file, "question_file": args.question_file,
                         **{f"uncertainty_file_{i}": p for i, p in enumerate(args.uncertainty_file)}}),
        details={"annotation_dir": os.path.abspath(args.annotation_dir),
                 "upstream_manifests": [os.path.abspath(p) for p in upstream if os.path.exists(p)],
                 "coverage": coverage,
                 "columns": {c.key: {"label": c.label, "measure": c.measure} for c in joined.columns},
                 "outputs": ["metrics.json", "metrics.csv", "metrics.md", "per_question.csv", "distributions.json",
                             "distributions.csv",
                             *(os.path.basename(p) for p in figures)]})
    manifest.update(status="complete", records=len(joined.question_ids))
    write_manifest(os.path.join(args.output_dir, "manifest.json"), manifest)
    print(f"wrote {os.path.join(args.output_dir, 'metrics.md')} (also metrics.json, metrics.csv, per_question.csv, "
          f"distributions.json, distributions.csv"
          f"{', figures' if figures else ''})")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
