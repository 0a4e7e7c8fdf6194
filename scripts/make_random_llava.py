"""Write a LLaVA-1.5-7B-shaped checkpoint with shaped random weights, plus a POPE-shaped data set.

For GPU benchmarks of the command-line tools (e.g. several GPUs over torchrun) without real
weights or COCO: the checkpoint is the bench model of `bench_sampling.py` in the original
layout (separate CLIP folder), the images are random JPEGs under POPE's COCO file names.

PYTHONPATH=. python scripts/make_random_llava.py --output-dir /tmp/llava7b --pope-dir POPE --tokenizer-dir TOK
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

import numpy as np
import torch
from PIL import Image

from llava.eval.prepare_pope import prepare_pope_questions
from llava.model.tiny import CLIP_PREPROCESSOR, original_config, original_layout_state_dict
from scripts.bench_sampling import shaped_random_model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--pope-dir", required=True)
    parser.add_argument("--tokenizer-dir", required=True)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)

    model = shaped_random_model(args.device, torch.float16, 16.0, 13.8, 3e4)
    llava_sd, clip_sd = original_layout_state_dict(model)
    del model
    from safetensors.torch import save_file

    model_dir, clip_dir = os.path.join(args.output_dir, "llava-v1.5-7b-random"), os.path.join(args.output_dir, "clip")
    os.makedirs(model_dir, exist_ok=True)
    os.makedirs(clip_dir, exist_ok=True)
    save_file({k: v.cpu() for k, v in llava_sd.items()}, os.path.join(model_dir, "model.safetensors"))
    save_file({k: v.cpu() for k, v in clip_sd.items()}, os.path.join(clip_dir, "model.safetensors"))
    text = {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 32, "hidden_act": "silu",
            "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2,
            "pad_token_id": 0}
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(original_config(text, clip_dir, 1024), f, indent=2)
    for name in os.listdir(args.tokenizer_dir):
        shutil.copy(os.path.join(args.tokenizer_dir, name), model_dir)
    clip = {"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
            "num_attention_heads": 16, "image_size": 336, "patch_size": 14, "projection_dim": 768,
            "hidden_act": "quick_gelu"}
    with open(os.path.join(clip_dir, "config.json"), "w") as f:
        json.dump(clip, f, indent=2)
    with open(os.path.join(clip_dir, "preprocessor_config.json"), "w") as f:
        json.dump(CLIP_PREPROCESSOR, f, indent=2)

    questions = prepare_pope_questions(args.pope_dir)
    image_dir = os.path.join(args.output_dir, "images")
    os.makedirs(image_dir, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in dict.fromkeys(q["image"] for q in questions):
        Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(os.path.join(image_dir, name))
    with open(os.path.join(args.output_dir, "llava_pope_test.jsonl"), "w") as f:
        f.writelines(json.dumps(q) + "\n" for q in questions)
    print(f"wrote {model_dir}, {clip_dir}, {image_dir} and the question file")


if __name__ == "__main__":
    main()
