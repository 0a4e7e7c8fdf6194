"""The method-v2 protocol's tables and combined metrics from eval_auroc's metrics.json files.

    python scripts/method_v2_table.py --world validation=V/vs_entropy,V/vs_baseline \\
        --world shipped_test=T/vs_entropy,T/vs_baseline --settings S.json --output-json docs/method_v2_metrics.json \\
        --output-md docs/method_v2_tables.md

Each --world names a world and its two eval folders (paired against yes_no_entropy, then against
the best published baseline of the settings file). p is the two-sided bootstrap p-value,
unadjusted ("p<1/B": none of the B resamples crossed 0). Prints, per world, the paired dAUROC with
its 95% interval and p on all questions and the adversarial split against both references, the
dAUPR and dPRR on all questions, and the yes-answer / no-answer dAUROC, for the three
candidates and the controls; writes every metrics.json into one file with the settings (and,
when present beside them, the eval_vs_cv_p_yes_logistic and eval_vs_cv_logistic folders: the
candidates paired against the controls).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CONTROLS = ("cv_p_yes_logistic", "cv_logistic")  # eval_vs_<control> folders beside the two evaluations
ROWS = ("grounding_disagreement", "counterfactual_disagreement", "prior_vauq", "grounding_disagreement_term",
        "counterfactual_term", "cv_p_yes_isotonic", "cv_p_yes_logistic", "cv_logistic")


def cell(split: dict, column: str, metric: str = "auroc") -> str:
    """'+0.012 [-0.003, +0.027] p=0.120' of a paired difference; '-' when absent.

    >>> cell({"paired": {"x": {"auroc": {"value": 0.012, "ci_low": -0.003, "ci_high": 0.027, "p_value": 0.12}}}}, "x")
    '+0.012 [-0.003, +0.027] p=0.120'
    """
    entry = split.get("paired", {}).get(column, {}).get(metric)
    if not entry or entry.get("value") is None:
        return "-"
    low, high = entry.get("ci_low"), entry.get("ci_high")
    interval = f" [{low:+.3f}, {high:+.3f}]" if low is not None and high is not None else ""
    p = entry.get("p_value")
    shown = "" if p is None else " p<1/B" if p == 0 else f" p={p:.3f}"  # 0: no resample crossed 0
    return f"{entry['value']:+.3f}{interval}{shown}"


def auroc_of(split: dict, column: str) -> str:
    value = split.get(column, {}).get("auroc", {}).get("value")
    return "-" if value is None else f"{value:.3f}"


def world_table(name: str, vs_entropy: dict, vs_baseline: dict, baseline: str) -> str:
    lines = [f"### {name}", "",
             f"n = {vs_entropy['all']['n']} questions, {vs_entropy['all']['n_errors']} errors; "
             f"yes_no_entropy AUROC {auroc_of(vs_entropy['all'], 'yes_no_entropy')} (all), "
             f"{auroc_of(vs_entropy.get('adversarial', {}), 'yes_no_entropy')} (adversarial); "
             f"{baseline} {auroc_of(vs_entropy['all'], baseline)} / {auroc_of(vs_entropy.get('adversarial', {}), baseline)}.",
             "", "| score | AUROC all | dAUROC vs yes_no_entropy, all | adversarial | dAUROC vs "
             f"{baseline}, all | adversarial | dAUPR all | dPRR all | dAUROC yes-answers | no-answers |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for column in (c for c in ROWS if c in vs_entropy["all"]):
        e, b = vs_entropy, vs_baseline
        lines.append(f"| `{column}` | {auroc_of(e['all'], column)} | {cell(e['all'], column)} | "
                     f"{cell(e.get('adversarial', {}), column)} | {cell(b['all'], column)} | "
                     f"{cell(b.get('adversarial', {}), column)} | {cell(e['all'], column, 'aupr')} | "
                     f"{cell(e['all'], column, 'prr')} | {cell(e.get('yes_answers', {}), column)} | "
                     f"{cell(e.get('no_answers', {}), column)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", action="append", required=True, metavar="NAME=VS_ENTROPY,VS_BASELINE")
    parser.add_argument("--settings", required=True, help="the method-v2 settings file the worlds were scored with")
    parser.add_argument("--output-json", required=True)
    parser.add_argument("--output-md", required=True)
    args = parser.parse_args(argv)
    with open(args.settings, encoding="utf-8") as handle:
        settings = json.load(handle)
    baseline = settings.get("best_published_baseline") or "vauq"
    combined, tables = {"settings": settings, "worlds": {}}, []
    for spec in args.world:
        name, _, folders = spec.partition("=")
        try:
            entropy_dir, baseline_dir = folders.split(",")
        except ValueError:
            raise ValueError(f"--world {spec!r} must be NAME=VS_ENTROPY_DIR,VS_BASELINE_DIR") from None
        reports = []
        for folder in (entropy_dir, baseline_dir):
            with open(os.path.join(folder, "metrics.json"), encoding="utf-8") as handle:
                reports.append(json.load(handle))
        combined["worlds"][name] = {"vs_yes_no_entropy": reports[0], f"vs_{baseline}": reports[1]}
        for control in CONTROLS:  # the candidates paired against the controls, when evaluated
            path = os.path.join(os.path.dirname(os.path.abspath(entropy_dir)), f"eval_vs_{control}", "metrics.json")
            if os.path.exists(path):
                with open(path, encoding="utf-8") as handle:
                    combined["worlds"][name][f"vs_{control}"] = json.load(handle)
        tables.append(world_table(name, reports[0], reports[1], baseline))
    with open(args.output_json, "w", encoding="utf-8") as handle:
        json.dump(combined, handle, separators=(",", ":"))
    text = "\n".join(tables)
    with open(args.output_md, "w", encoding="utf-8") as handle:
        handle.write(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
