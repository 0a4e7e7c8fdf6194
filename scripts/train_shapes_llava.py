"""Train the embedded demo model (a tiny LLaVA-1.5 on ShapesPOPE) and save it in the original layout.

    python scripts/train_shapes_llava.py            # the shipped checkpoint: default seed and settings

Writes playground/models/llava-v1.5-shapes-tiny/ (config with mm_* keys, projector and
language-model weights, tokenizer) and playground/models/clip-vit-shapes-tiny/ (CLIP vision
tower with its preprocessor_config.json), prints the training loss as it goes, then the
accuracy and yes/no-entropy AUROC on the shipped ShapesPOPE test set.
About 10-15 minutes on two CPU cores; `--device cuda` takes a few minutes on a GPU (the
weights then differ from the shipped ones in the last digits).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

# Run from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from semantic_entropy.demo import training as demo  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    defaults = demo.DemoTrainingSettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-folder", default=demo.DEFAULT_MODEL_FOLDER)
    parser.add_argument("--clip-folder", default=demo.DEFAULT_CLIP_FOLDER)
    parser.add_argument("--test-set", default=demo.DEFAULT_TEST_SET, help="ShapesPOPE folder to evaluate on; '' skips")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    settings = dataclasses.replace(defaults, seed=args.seed, steps=args.steps, batch_size=args.batch_size, lr=args.lr)
    print("settings:", json.dumps(dataclasses.asdict(settings), default=str))
    result = demo.train_demo_model(settings)
    print(f"trained {settings.steps} steps of {settings.batch_size} examples in {result.seconds:.0f} s")
    demo.save_demo_model(result, args.model_folder, args.clip_folder)
    size = sum(os.path.getsize(os.path.join(folder, name)) for folder in (args.model_folder, args.clip_folder)
               for name in os.listdir(folder))
    print(f"saved {args.model_folder} and {args.clip_folder} ({size / 2**20:.2f} MiB)")
    if not args.test_set:
        return {}
    from llava.model.builder import load_pretrained_model

    # Evaluate what was saved, loaded the way users load it.
    tokenizer, model, image_processor, _ = load_pretrained_model(args.model_folder, device="cpu")
    quality = demo.evaluate_demo_model(model, tokenizer, image_processor, args.test_set)
    print(demo.format_quality(quality))
    return quality


if __name__ == "__main__":
    main()
