"""Choose VAUQ's and VL-Uncertainty's published settings on a validation world (never the test set).

    python scripts/choose_baseline_settings.py --model-path M --image-folder I \\
        --generations-file VAL/generations.jsonl --answers-file VAL/answers.jsonl \\
        --annotation-dir VAL/coco --question-file VAL/llava_pope_test.jsonl --output-dir O

The authors of VAUQ and VL-Uncertainty set their hyperparameters per benchmark for
LLaVA-1.5-7B, and none for POPE. This runs `semantic_entropy.baseline_probes` once per
published setting (VAUQ: MMVet, CVBench, VILP; VL-Uncertainty: MMVet, MMMU, ScienceQA, whose
(radii, temperature) LLaVABench shares; paired in that order, each run serving one candidate
of each), scores the runs and picks, per detector, the setting with the highest AUROC over all
questions (VL-Uncertainty by its expectation over the draws, which has no sampling noise).
Prints the table and writes O/choice.json. Stage 1 must have run on the validation world.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from semantic_entropy import baseline_probes, compute_se_myself, eval_auroc  # noqa: E402

VAUQ_CANDIDATES = ("MMVet", "CVBench", "VILP")
VL_CANDIDATES = ("MMVet", "MMMU", "ScienceQA")
CHOSEN_BY = {"vauq": "vauq", "vl": "vl_uncertainty_expected"}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, what in [("--model-path", "model folder"), ("--image-folder", "the validation world's images"),
                       ("--generations-file", "stage 1's generations on the validation world"),
                       ("--answers-file", "stage 1's answers on the validation world"),
                       ("--annotation-dir", "the validation world's POPE label files"),
                       ("--question-file", "the validation world's LLaVA question file"),
                       ("--output-dir", "where the runs and choice.json go")]:
        parser.add_argument(flag, required=True, help=what)
    parser.add_argument("--vision-tower", default=None, help="local CLIP folder (default: the config's)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--dtype", default="auto", help="model dtype")
    args = parser.parse_args(argv)

    os.makedirs(args.output_dir, exist_ok=True)
    model_flags = ["--model-path", args.model_path, "--device", args.device, "--dtype", args.dtype]
    if args.vision_tower:
        model_flags += ["--vision-tower", args.vision_tower]
    measures = [m.name for m in baseline_probes_measures()]
    files, labels = [], []
    for vauq_setting, vl_setting in zip(VAUQ_CANDIDATES, VL_CANDIDATES):
        label = f"vauq-{vauq_setting}_vl-{vl_setting}"
        probed = os.path.join(args.output_dir, f"{label}.generations.jsonl")
        scores = os.path.join(args.output_dir, f"{label}.uncertainty.jsonl")
        baseline_probes.main([*model_flags, "--image-folder", args.image_folder, "--generations-file",
                              args.generations_file, "--output-file", probed, "--vauq-setting", vauq_setting,
                              "--vl-setting", vl_setting])
        if compute_se_myself.main(["--generations-file", probed, "--output-file", scores, "--measures", *measures]):
            raise SystemExit(f"stage 2 failed on {probed}")
        files.append(scores)
        labels.append(label)
    report_dir = os.path.join(args.output_dir, "eval")
    if eval_auroc.main(["--uncertainty-file", *files, "--labels", *labels, "--answers-file", args.answers_file,
                        "--annotation-dir", args.annotation_dir, "--question-file", args.question_file,
                        "--output-dir", report_dir, "--bootstrap", "200", "--no-plots"]):
        raise SystemExit("stage 3 failed")
    with open(os.path.join(report_dir, "metrics.json")) as f:
        overall = json.load(f)["all"]

    def auroc(label: str, measure: str) -> float:
        return overall[f"{label}/{measure}"]["auroc"]["value"]

    choice = {
        "vauq_setting": max(zip(VAUQ_CANDIDATES, labels), key=lambda c: auroc(c[1], CHOSEN_BY["vauq"]))[0],
        "vl_setting": max(zip(VL_CANDIDATES, labels), key=lambda c: auroc(c[1], CHOSEN_BY["vl"]))[0],
        "auroc_all": {label: {m: auroc(label, m) for m in measures} for label in labels},
    }
    with open(os.path.join(args.output_dir, "choice.json"), "w") as f:
        json.dump(choice, f, indent=2)
    print(json.dumps(choice, indent=2))


def baseline_probes_measures():
    from semantic_entropy.scoring.registry import baseline_measures

    return baseline_measures()


if __name__ == "__main__":
    main()
