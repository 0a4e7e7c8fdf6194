"""A combination of uncertainty scores fitted on labelled questions, cross-validated across images.

python -m semantic_entropy.fitted_combination --uncertainty-file U --answers-file A \
    --annotation-dir D --question-file Q --features yes_no_entropy,visual_contrast_noise \
    --output-file U2 [--folds 5] [--seed 0] [--name cv_logistic]

Not training-free: a standardised logistic regression predicts "the greedy answer is wrong"
from the listed scores. Every question's combined score comes from a model fitted on the other
folds only, and the folds split the *images* (all questions about one image fall in one fold),
so neither the question nor its image was seen in fitting. U2 is U with the score added
(`scores[<name>]` = out-of-fold P(wrong)); `eval_auroc` reads it like any uncertainty file,
so the fitted score sits beside the training-free ones. U2.summary.json holds the features,
the folds and each fold's coefficients.

`--by-answer` fits one model per greedy answer direction; with `--features p_no --model
isotonic` (or logistic) it is the control "the best function of p(yes) alone" of docs/method.md.
"""

from __future__ import annotations

import json
import sys

from llava.cli import new_parser, run_main
from semantic_entropy.evaluation.combination import combine


def main(argv=None) -> dict:
    parser = new_parser(__doc__)
    parser.add_argument("--uncertainty-file", required=True, help="stage-2 uncertainty jsonl holding the feature scores")
    parser.add_argument("--answers-file", required=True, help="greedy answers (LLaVA jsonl)")
    parser.add_argument("--annotation-dir", required=True, help="folder with coco_pope_<category>.json")
    parser.add_argument("--question-file", required=True, help="the question file the answers belong to")
    parser.add_argument("--features", required=True, help="comma list of score names")
    parser.add_argument("--output-file", required=True, help="uncertainty jsonl with the combined score added")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds (split by image)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the image-to-fold assignment")
    parser.add_argument("--name", default="cv_logistic", help="name of the combined score")
    parser.add_argument("--by-answer", action="store_true",
                        help="fit one model per greedy answer direction (yes / no), e.g. the p(yes)-only control")
    parser.add_argument("--model", choices=("logistic", "isotonic"), default="logistic",
                        help="logistic regression, or (one feature, with --by-answer) isotonic regression")
    args = parser.parse_args(argv)
    features = [f.strip() for f in args.features.split(",") if f.strip()]
    if not features:
        raise ValueError("--features lists no score")
    summary = combine(args.uncertainty_file, args.answers_file, args.annotation_dir, args.question_file, features,
                      args.output_file, args.folds, args.seed, args.name, args.by_answer, args.model)
    print(json.dumps({k: v for k, v in summary.items() if k != "fold_models"}))
    print(f"wrote {args.output_file} and {args.output_file}.summary.json")
    return summary


if __name__ == "__main__":
    sys.exit(run_main(main))
