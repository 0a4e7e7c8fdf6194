"""Export a loaded LLaVA-1.5 model to the llava-hf layout (one folder, vocab padded to 64)."""

from __future__ import annotations

import sys

import torch
from transformers import AddedToken

from llava.cli import new_parser, run_main


def padded_vocab_size(vocab_size: int, added: int = 2, multiple: int = 64) -> int:
    """llava-hf's vocabulary: room for <image> and <pad>, rounded up to a multiple of 64.

    >>> padded_vocab_size(32000)
    32064
    """
    return -(-(vocab_size + added) // multiple) * multiple


def grow_rows(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """(V, H) -> (rows, H), new rows set to the mean row (deterministic; they are never scored)."""
    extra = weight.mean(dim=0, keepdim=True).expand(rows - weight.shape[0], -1)
    return torch.cat([weight, extra], dim=0)


def export_hf_layout(model, tokenizer, image_processor, output_dir: str) -> None:
    """Write `model` as a llava-hf checkpoint: `<image>` and `<pad>` tokens, padded vocab, one config."""
    old_vocab = model.config.text_config.vocab_size
    if model.scored_vocab_size != old_vocab:
        raise ValueError("the model already has llava-hf's extra vocabulary rows")
    tokenizer.add_tokens([AddedToken("<image>", special=True, normalized=False)], special_tokens=True)
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    new_vocab = padded_vocab_size(old_vocab)
    if len(tokenizer) > new_vocab:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, more than the padded vocabulary {new_vocab}")

    embed = model.get_input_embeddings()
    with torch.no_grad():
        new_embed = torch.nn.Embedding(new_vocab, embed.weight.shape[1], dtype=embed.weight.dtype)
        new_embed.weight.copy_(grow_rows(embed.weight, new_vocab))
        new_head = torch.nn.Linear(embed.weight.shape[1], new_vocab, bias=False, dtype=model.lm_head.weight.dtype)
        new_head.weight.copy_(grow_rows(model.lm_head.weight, new_vocab))
    model.set_input_embeddings(new_embed)
    model.lm_head = new_head
    model.config.text_config.vocab_size = new_vocab
    model.config.image_token_id = image_token_id
    model.config.text_config.pad_token_id = tokenizer.pad_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.architectures = ["LlavaForConditionalGeneration"]
    for key in ("image_aspect_ratio",):  # not a llava-hf config key
        if hasattr(model.config, key):
            delattr(model.config, key)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    image_processor.save_pretrained(output_dir)


def main(argv=None) -> None:
    from llava.model.builder import load_pretrained_model

    parser = new_parser("Write an llava-hf-layout copy of an original LLaVA-1.5 checkpoint.")
    parser.add_argument("--model-path", required=True, help="an original llava-v1.5 folder")
    parser.add_argument("--vision-tower", default=None, help="local CLIP folder (overrides mm_vision_tower)")
    parser.add_argument("--output-dir", required=True, help="folder of the llava-hf copy")
    parser.add_argument("--dtype", default="float16", help="dtype of the language model's weights in the copy")
    args = parser.parse_args(argv)
    tokenizer, model, image_processor, _ = load_pretrained_model(
        args.model_path, device="cpu", dtype=args.dtype, vision_tower=args.vision_tower
    )
    export_hf_layout(model, tokenizer, image_processor, args.output_dir)
    print(f"wrote {args.output_dir}")


if __name__ == "__main__":
    sys.exit(run_main(main))
