"""Train the embedded demo model (a tiny LLaVA-1.5 on the ShapesPOPE v2 world) from scratch.

    python scripts/train_shapes_llava.py            # the shipped checkpoint: default seed and settings

Runs LLaVA-1.5's recipe at a tiny size (semantic_entropy/demo/recipe.py): (a) the language
model on text alone, (b) the CLIP vision tower contrastively on image-caption pairs, then
frozen, (c) the projector on captioning, (d) instruction tuning. Writes
playground/models/llava-v1.5-shapes-tiny/ (original layout: config with mm_* keys, projector
and language-model weights, tokenizer) and playground/models/clip-vit-shapes-tiny/, prints
each stage's loss and time, then (unless --test-set '') the figures of scripts/check_world.py.
About 15-20 minutes on CPU; one torch thread is the default, since two threads slow down
badly on a shared two-core machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv: list[str] | None = None) -> dict:
    from semantic_entropy.demo import recipe

    defaults = recipe.RecipeSettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-folder", default=recipe.DEFAULT_MODEL_FOLDER)
    parser.add_argument("--clip-folder", default=recipe.DEFAULT_CLIP_FOLDER)
    parser.add_argument("--test-set", default=recipe.DEFAULT_TEST_SET, help="ShapesPOPE folder to check on; '' skips")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    settings = dataclasses.replace(defaults, seed=args.seed)
    print("settings:", json.dumps(dataclasses.asdict(settings), default=str))
    start = time.perf_counter()
    result = recipe.train_world_model(settings)
    total = time.perf_counter() - start
    print(f"trained in {total:.0f} s: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items()))
    recipe.save_world_model(result, args.model_folder, args.clip_folder)
    size = sum(os.path.getsize(os.path.join(folder, name)) for folder in (args.model_folder, args.clip_folder)
               for name in os.listdir(folder))
    print(f"saved {args.model_folder} and {args.clip_folder} ({size / 2**20:.2f} MiB)")
    if not args.test_set:
        return {}
    from llava.model.builder import load_pretrained_model
    from semantic_entropy.demo.world_check import check_world, format_figures

    # Check what was saved, loaded the way users load it.
    tokenizer, model, processor, _ = load_pretrained_model(args.model_folder, device="cpu")
    figures = check_world(model, tokenizer, processor, args.test_set, model_path=args.model_folder)
    print(format_figures(figures))
    return figures


if __name__ == "__main__":
    main()
