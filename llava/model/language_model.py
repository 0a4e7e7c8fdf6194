"""LLaVA's language model on its own: the text-only LLM inside a LLaVA-1.5 checkpoint.

A user who has LLaVA and no other LLM can still use an LLM entailment judge: LLaVA-1.5's
language model is Vicuna-1.5 fine-tuned, and judging two answers needs no image. Two ways in:

- `load_llava_language_model(folder)`: an original LLaVA folder (config with `mm_*` keys)
  becomes a `LlamaForCausalLM` holding only `model.embed_tokens`, `model.layers.*`,
  `model.norm` and `lm_head`; neither CLIP nor the projector is read, so the judge costs
  the language model's memory and nothing more.
- `language_model_of(llava_model)`: a process that already holds LLaVA (stage 1, a notebook)
  gets a `LlamaForCausalLM` whose modules ARE the LLaVA model's (the same parameter
  tensors), so judging costs no second copy of the weights.

The judge's prompt is asked in LLaVA's own conversation format (`render_llava_text_prompt`),
the format the model was tuned on, with no image slot.
"""

from __future__ import annotations

import os

import torch

from llava.conversation import DEFAULT_CONV_MODE, conv_templates
from llava.model.checkpoint_files import CheckpointError, TensorReader, weight_map

LANGUAGE_MODEL_PREFIXES = ("model.embed_tokens.", "model.layers.", "model.norm.", "lm_head.")


def is_llava_folder(path: str) -> bool:
    """Whether `path` is a LLaVA checkpoint folder (either layout), by its config's keys."""
    from llava.model.builder import checkpoint_layout, read_json

    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        return False
    try:
        checkpoint_layout(read_json(config_path))
    except CheckpointError:
        return False
    return True


def render_llava_text_prompt(prompt: str, conv_mode: str = DEFAULT_CONV_MODE) -> str:
    """`prompt` as the single user turn of LLaVA's conversation, without an image.

    >>> render_llava_text_prompt("Hi?").endswith("USER: Hi? ASSISTANT:")
    True
    """
    conv = conv_templates[conv_mode].copy()
    conv.append_message(conv.roles[0], prompt)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


def language_model_of(llava_model):
    """A LlamaForCausalLM sharing `llava_model`'s language model and head (no copy).

    Built on the meta device, then its modules are replaced by the LLaVA model's own, so no
    memory is allocated for weights.
    """
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        language_model = LlamaForCausalLM(llava_model.config.text_config)
    language_model.model = llava_model.model.language_model
    language_model.lm_head = llava_model.lm_head
    return language_model.eval()


def load_llava_language_model(path: str, device: str = "cpu", dtype: torch.dtype = torch.float32,
                              attn_implementation: str = "sdpa"):
    """(LlamaForCausalLM, tokenizer, vocab_limit) from an original LLaVA folder, language model only.

    `vocab_limit` is the number of text ids (ids beyond it are never generated).
    """
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from llava.model.builder import (LLAMA_CONFIG_KEYS, allocate_uninitialised, checkpoint_layout, load_state,
                                     read_json)

    config = read_json(os.path.join(path, "config.json"))
    if checkpoint_layout(config) != "original":
        raise CheckpointError(f"{path} is a llava-hf checkpoint; the LLM judge reads the language model of an "
                              "original LLaVA folder (config with mm_* keys)")
    text_config = LlamaConfig(**{k: config[k] for k in LLAMA_CONFIG_KEYS if k in config}, tie_word_embeddings=False)
    text_config._attn_implementation = attn_implementation
    model = allocate_uninitialised(LlamaForCausalLM, text_config, device, dtype)
    reader = TensorReader(weight_map(path))
    plan = {key: (reader, key) for key in reader.mapping
            if key.startswith(LANGUAGE_MODEL_PREFIXES) and not key.endswith("rotary_emb.inv_freq")}
    load_state(model, plan, context=f"{path} (language model)")
    model.eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer, text_config.vocab_size
