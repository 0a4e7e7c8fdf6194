"""Choose the instruction data's negatives per image on the validation world, by a rule fixed first.

    python scripts/choose_world_recipe.py --work-dir runs/world_recipe \\
        --output-json docs/world_figures/recipe_selection.json

The rule (docs/world.md, "How the recipe was chosen"): among `--candidates`, the smallest
number of absent classes asked per training image whose model meets every acceptance criterion
of scripts/check_world.py on the validation world with its adversarial yes-rate at most
`--max-adversarial-yes-rate` (0.45: the top of LLaVA-1.5-7B's published POPE range, and about
two seed-to-seed standard deviations of a 150-image world below the criterion's 0.5).

Stages (a)-(c) do not read the instruction settings, so they run once (`--part base`) and each
candidate runs only the pool and stage (d) from their weights (`--part candidate --negatives N`);
the weights equal those of the whole recipe with that setting. `--part all` (the default) runs
the base, then the candidates, `--jobs` at a time, then applies the rule. Test worlds are never
read here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

VALIDATION_SEED = 101


def base_weights_path(work_dir: str) -> str:
    return os.path.join(work_dir, "before_instruct.safetensors")


def candidate_dir(work_dir: str, negatives: int) -> str:
    return os.path.join(work_dir, f"negatives_{negatives}")


def train_base(settings, work_dir: str) -> None:
    """Stages (a)-(c), saved for the candidates."""
    from safetensors.torch import save_file

    from semantic_entropy.demo import recipe

    result = recipe.train_world_model(settings, stages=recipe.BEFORE_INSTRUCT)
    state = {k: v.contiguous() for k, v in result.model.state_dict().items()}
    os.makedirs(work_dir, exist_ok=True)
    save_file(state, base_weights_path(work_dir) + ".tmp")
    os.replace(base_weights_path(work_dir) + ".tmp", base_weights_path(work_dir))
    print("base stages:", json.dumps(result.seconds))


def validation_world(work_dir: str) -> str:
    """The validation world (seed 101) in POPE's layout, written once."""
    folder = os.path.join(work_dir, f"shapes_pope_seed{VALIDATION_SEED}")
    if not os.path.exists(os.path.join(folder, "metadata.json")):
        from scripts.make_shapes_pope import main as make_world

        make_world(["--output-dir", folder, "--seed", str(VALIDATION_SEED)])
    return folder


def train_candidate(settings, work_dir: str, negatives: int) -> dict:
    """Stage (d) with `negatives` absent classes per image, saved, checked on the validation world."""
    from safetensors.torch import load_file

    from llava.model.builder import load_pretrained_model
    from semantic_entropy.demo import recipe
    from semantic_entropy.demo.world_check import check_world, format_figures

    settings = dataclasses.replace(settings, negatives_per_image=negatives)
    start = load_file(base_weights_path(work_dir))
    result = recipe.train_world_model(settings, stages=("pool", "instruct"), start_state=start)
    folder = candidate_dir(work_dir, negatives)
    model_folder, clip_folder = os.path.join(folder, "llava-v1.5-shapes-tiny"), os.path.join(folder, "clip-vit-shapes-tiny")
    recipe.save_world_model(result, model_folder, clip_folder)
    tokenizer, model, processor, _ = load_pretrained_model(model_folder, device="cpu")
    figures = check_world(model, tokenizer, processor, validation_world(work_dir), model_path=model_folder)
    print(format_figures(figures))
    with open(os.path.join(folder, "validation_figures.json"), "w") as f:
        json.dump(figures, f, indent=1)
    return figures


def choose(figures_by_negatives: dict[int, dict], max_adversarial_yes_rate: float) -> int | None:
    """The smallest candidate meeting every criterion with the yes-rate margin; None if none does.

    >>> ok = {"criteria": {"a": True}, "yes_rate": {"adversarial": 0.44}}
    >>> high = {"criteria": {"a": True}, "yes_rate": {"adversarial": 0.47}}
    >>> failing = {"criteria": {"a": False}, "yes_rate": {"adversarial": 0.40}}
    >>> choose({3: high, 4: failing, 5: ok}, 0.45)
    5
    >>> choose({3: high}, 0.45) is None
    True
    """
    for negatives in sorted(figures_by_negatives):
        figures = figures_by_negatives[negatives]
        if all(figures["criteria"].values()) and figures["yes_rate"]["adversarial"] <= max_adversarial_yes_rate:
            return negatives
    return None


def summary(figures: dict) -> dict:
    return {"accuracy": figures["accuracy"], "recall": figures["recall"], "yes_rate": figures["yes_rate"],
            "adversarial_prior_false_yes_share": figures["errors"]["adversarial_prior_false_yes_share"],
            "miss_share_of_all_errors": figures["errors"]["miss_share_of_all_errors"],
            "text_prior_gap": figures["text_prior"]["gap"], "failed_criteria": [k for k, v in figures["criteria"].items() if not v]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--output-json", help="where the selection record goes (--part all)")
    parser.add_argument("--part", choices=("all", "base", "candidate"), default="all")
    parser.add_argument("--negatives", type=int, help="the candidate of --part candidate")
    parser.add_argument("--candidates", default="3,4,5")
    parser.add_argument("--max-adversarial-yes-rate", type=float, default=0.45)
    parser.add_argument("--jobs", type=int, default=1, help="candidates trained side by side (one thread each)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per process")
    args = parser.parse_args(argv)

    import torch

    from semantic_entropy.demo import recipe

    torch.set_num_threads(args.threads)
    settings = recipe.RecipeSettings()
    if args.part == "base":
        train_base(settings, args.work_dir)
        return
    if args.part == "candidate":
        if args.negatives is None:
            parser.error("--part candidate needs --negatives")
        train_candidate(settings, args.work_dir, args.negatives)
        return
    candidates = [int(c) for c in args.candidates.split(",")]
    if not os.path.exists(base_weights_path(args.work_dir)):
        train_base(settings, args.work_dir)
    validation_world(args.work_dir)
    pending = [n for n in candidates
               if not os.path.exists(os.path.join(candidate_dir(args.work_dir, n), "validation_figures.json"))]
    command = [sys.executable, os.path.abspath(__file__), "--work-dir", args.work_dir, "--part", "candidate",
               "--threads", str(args.threads)]
    for first in range(0, len(pending), args.jobs):
        running = [subprocess.Popen([*command, "--negatives", str(n)]) for n in pending[first:first + args.jobs]]
        failed = [p.args for p in running if p.wait() != 0]
        if failed:
            sys.exit(f"candidate runs failed: {failed}")
    figures = {}
    for n in candidates:
        with open(os.path.join(candidate_dir(args.work_dir, n), "validation_figures.json")) as f:
            figures[n] = json.load(f)
    chosen = choose(figures, args.max_adversarial_yes_rate)
    record = {"rule": f"smallest negatives_per_image meeting every criterion on the validation world (seed "
                      f"{VALIDATION_SEED}) with adversarial yes-rate <= {args.max_adversarial_yes_rate}",
              "chosen_negatives_per_image": chosen,
              "validation": {str(n): summary(f) for n, f in figures.items()}}
    print(json.dumps(record, indent=1))
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
