"""Print and write the acceptance figures of a model on a ShapesPOPE v2 test world (docs/world.md).

    python scripts/check_world.py --model-path playground/models/llava-v1.5-shapes-tiny \
        --pope-dir playground/data/eval/shapes_pope --output-json world_figures.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", default="playground/models/llava-v1.5-shapes-tiny")
    parser.add_argument("--pope-dir", default="playground/data/eval/shapes_pope")
    parser.add_argument("--output-json", default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from llava.model.builder import load_pretrained_model
    from semantic_entropy.demo.world_check import check_world, format_figures

    tokenizer, model, processor, _ = load_pretrained_model(args.model_path, device="cpu")
    figures = check_world(model, tokenizer, processor, args.pope_dir, model_path=args.model_path)
    figures["model_path"], figures["pope_dir"] = args.model_path, args.pope_dir
    print(format_figures(figures))
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump(figures, f, indent=1)
            f.write("\n")
    return figures


if __name__ == "__main__":
    main()
