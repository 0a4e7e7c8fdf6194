"""Choose the method-v2 settings on a validation world (never a test world) and write them.

    python scripts/choose_method_settings.py --generations-file VAL/generations_..._baselines_method.jsonl \\
        --answers-file VAL/answers.jsonl --annotation-dir VAL/coco --question-file VAL/llava_pope_test.jsonl \\
        --output semantic_entropy/scoring/method_v2_settings.json --markdown VAL/choice.md \\
        --fitted-on "ShapesPOPE v2, seed 11, llava-v1.5-shapes-v2"

The generations must carry the baseline pass's and the method pass's fields
(`semantic_entropy.baseline_probes`, `semantic_entropy.method_probes`). The script fits the
grounding calibration (logistic regression of "the asked object is present" on each grounding
statistic), grid-searches every score's hyperparameters by the AUROC of the errors over all
questions, names the best published baseline and the primary candidate, and writes the settings
file (with every grid) and a markdown table. docs/method.md describes the choices.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from llava.cli import run_main  # noqa: E402
from llava.eval.eval_pope import join_pope, parse_yes_no  # noqa: E402
from llava.jsonl_io import write_json_atomic  # noqa: E402
from semantic_entropy.evaluation import method_selection as selection  # noqa: E402
from semantic_entropy.evaluation.metrics import auroc  # noqa: E402
from semantic_entropy.sampling.generations_io import iter_generations  # noqa: E402
from semantic_entropy.scoring.registry import MEASURES_BY_NAME, MeasureInputs, missing_fields  # noqa: E402


def validation_questions(generations_file, answers_file, annotation_dir, question_file):
    """(questions, {baseline measure: AUROC}) of the validation world's POPE questions."""
    labelled, _ = join_pope(annotation_dir, question_file, answers_file)
    records = {r.question_id: r for r in iter_generations(generations_file)}
    questions, baseline_scores, wrong = [], {name: [] for name in selection.PUBLISHED_BASELINES}, []
    for row in labelled:
        record = records.get(row.question_id)
        if record is None:
            raise ValueError(f"{generations_file} has no record for question_id {row.question_id!r}")
        if record.method_probes is None or record.baseline_probes is None:
            raise ValueError(f"{record.where()}: needs the baseline and method passes' fields")
        questions.append(selection.ValidationQuestion(
            mass=record.yes_no_mass, answer=parse_yes_no(record.greedy.text), wrong=not row.is_correct,
            object_present=row.label == "yes", probes=record.method_probes, baselines=record.baseline_probes))
        wrong.append(not row.is_correct)
        available = record.available_fields()
        for name in selection.PUBLISHED_BASELINES:
            measure = MEASURES_BY_NAME[name]
            if baseline_scores[name] is not None and not missing_fields(measure, available):
                baseline_scores[name].append(measure.compute(MeasureInputs(record, None)))
            else:
                baseline_scores[name] = None  # a detector some question lacks is not a candidate
    aurocs = {name: float(auroc(wrong, scores)) for name, scores in baseline_scores.items() if scores is not None}
    return questions, aurocs


def markdown(choice: dict) -> str:
    v = choice["validation"]
    lines = [f"Validation: {choice['fitted_on']} ({v['questions']} questions, {v['errors']} errors); "
             f"yes_no_entropy AUROC {v['yes_no_entropy_auroc']:.3f}.", "",
             "| score | chosen setting | validation AUROC |", "|---|---|---|"]
    for name, section in (("grounding_disagreement", "grounding"), ("counterfactual_disagreement", "counterfactual"),
                          ("prior_vauq", "prior_vauq")):
        setting = ", ".join(f"{k} {v_:.4g}" if isinstance(v_, float) else f"{k} {v_}"
                            for k, v_ in choice[section].items())
        lines.append(f"| `{name}` | {setting} | {v['candidate_auroc'][name]:.3f} |")
    lines += ["", "| published baseline | validation AUROC |", "|---|---|"]
    lines += [f"| `{k}` | {x:.3f} |" for k, x in sorted(v["published_baseline_auroc"].items(), key=lambda kv: -kv[1])]
    lines += ["", f"Primary candidate: `{choice['primary']}`; best published baseline: "
              f"`{choice['best_published_baseline']}`.", "",
              "Grounding grid (statistic, layer, top-k: AUROC of object presence, of the errors):", ""]
    lines += [f"- {r['statistic']} L{r['layer']} k{r['top_k']}: presence {r['presence_auroc']:.3f}, "
              f"errors {r['auroc']:.3f}" for r in v["grids"]["grounding"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, what in [("--generations-file", "validation generations with the baseline and method passes' fields"),
                       ("--answers-file", "stage 1's answers on the validation world"),
                       ("--annotation-dir", "the validation world's POPE label files"),
                       ("--question-file", "the validation world's LLaVA question file"),
                       ("--output", "the settings file to write"), ("--markdown", "the table to write"),
                       ("--fitted-on", "what the validation world is (recorded in the settings)")]:
        parser.add_argument(flag, required=True, help=what)
    args = parser.parse_args(argv)
    questions, baseline_aurocs = validation_questions(args.generations_file, args.answers_file, args.annotation_dir,
                                                      args.question_file)
    choice = selection.choose(questions, baseline_aurocs, args.fitted_on)
    write_json_atomic(args.output, choice)
    table = markdown(choice)
    with open(args.markdown, "w", encoding="utf-8") as handle:
        handle.write(table)
    print(table)
    print(json.dumps({k: choice[k] for k in ("grounding", "counterfactual", "prior_vauq", "primary",
                                             "best_published_baseline")}))


if __name__ == "__main__":
    sys.exit(run_main(main))
