"""Write a ShapesPOPE v2 test world in POPE's layout, plus LLaVA's question file for it.

    python scripts/make_shapes_pope.py --output-dir playground/data/eval/shapes_pope --seed 0 --num-test-images 500

Output folder:
    images/shapes_test_NNNNNN.png
    coco/coco_pope_{adversarial,random,popular}.json   POPE label files (JSON lines)
    llava_pope_test.jsonl                               LLaVA questions (llava.eval.prepare_pope)
    metadata.json                                       classes, companions, counts, per-image objects, question mechanisms

The shipped world is seed 0; docs/world.md uses seed 101 as the validation world and seed 202
as the second test world.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

# Run from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from llava.eval.prepare_pope import prepare_pope_questions, write_questions
from semantic_entropy.demo.world import WorldConfig
from semantic_entropy.demo.world_pope import write_test_set


def main(argv: list[str] | None = None) -> None:
    defaults = WorldConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="playground/data/eval/shapes_pope")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--num-test-images", type=int, default=defaults.num_test_images)
    parser.add_argument("--test-companion-prob", type=float, default=defaults.test_companion_prob,
                        help="probability that a test scene keeps an anchor's companion (lower = more absent companions)")
    args = parser.parse_args(argv)

    config = dataclasses.replace(defaults, seed=args.seed, num_test_images=args.num_test_images,
                                 test_companion_prob=args.test_companion_prob)
    metadata = write_test_set(args.output_dir, config)
    questions = prepare_pope_questions(os.path.join(args.output_dir, "coco"))
    write_questions(questions, os.path.join(args.output_dir, "llava_pope_test.jsonl"))
    print(f"Wrote {len(metadata['images'])} images and {len(questions)} questions "
          f"({metadata['questions_per_split']}) to {args.output_dir}")


if __name__ == "__main__":
    main()
