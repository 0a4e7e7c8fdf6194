"""LLaVA-1.5 on transformers' LlavaForConditionalGeneration, fed the way the original feeds it.

The original splices the 576 projected image features into the text embeddings at the
`IMAGE_TOKEN_INDEX` slot of the prompt's token ids. We do the same and hand the language
model `inputs_embeds`, so one code path serves both checkpoint layouts: the original one
(vocab 32000, no image token in the vocabulary) and llava-hf (vocab 32064, whose ids >= 32000
are never generated or scored).
"""

from __future__ import annotations

import inspect

import torch
from transformers import LlavaForConditionalGeneration, LogitsProcessor, LogitsProcessorList

from llava.constants import IMAGE_TOKEN_INDEX


class SuppressIdsFrom(LogitsProcessor):
    """Sets the logits of every id >= `first_id` to -inf (llava-hf's image and pad rows)."""

    def __init__(self, first_id: int):
        self.first_id = first_id

    def __call__(self, input_ids, scores):
        scores[:, self.first_id :] = float("-inf")
        return scores


class LlavaLlamaForCausalLM(LlavaForConditionalGeneration):
    """LlavaForConditionalGeneration plus the original LLaVA input convention.

    `generate(input_ids, images=pixel_values, ...)` accepts ids with `IMAGE_TOKEN_INDEX` slots
    (from `tokenizer_image_token`) as the original class does, and returns only the new tokens.
    """

    @property
    def scored_vocab_size(self) -> int:
        """Number of ids that are real text tokens (32000 for both LLaVA-1.5 layouts)."""
        vocab = self.config.text_config.vocab_size
        image_token_id = getattr(self.config, "image_token_id", None)
        if image_token_id is None or image_token_id >= vocab:
            return vocab
        return image_token_id

    @property
    def vision_dtype(self) -> torch.dtype:
        return next(self.model.vision_tower.parameters()).dtype

    @property
    def text_dtype(self) -> torch.dtype:
        return self.get_input_embeddings().weight.dtype

    def cache_kwarg(self) -> str:
        """Name of the KV-cache argument of forward (renamed across transformers 5.x releases)."""
        params = inspect.signature(self.forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, 336, 336) pixels -> (B, 576, hidden) projected features in the text dtype.

        The original's dtype flow: its loader rounds the pixels to the language model's dtype,
        CLIP casts them to its own dtype, and the selected features are cast back to the
        pixels' dtype before the projector.
        """
        pixels = pixel_values.to(device=self.device, dtype=self.text_dtype)
        out = self.model.vision_tower(pixels.to(self.vision_dtype), output_hidden_states=True)
        features = out.hidden_states[self.config.vision_feature_layer]  # (B, 1 + 576, vision_hidden)
        if self.config.vision_feature_select_strategy == "default":
            features = features[:, 1:]  # drop CLS: the 'patch' features of the original
        return self.model.multi_modal_projector(features.to(pixels.dtype))

    def embed_multimodal(self, input_ids_list, image_features: torch.Tensor | None):
        """Left-padded inputs_embeds, attention_mask and position_ids for a batch of prompts.

        input_ids_list: B 1-D id tensors, each with one IMAGE_TOKEN_INDEX per image;
        image_features: (num_images_in_batch, 576, hidden), consumed in order.
        Returns embeds (B, T, hidden), mask (B, T) and positions (B, T).
        """
        embed = self.get_input_embeddings()
        rows = []
        image_cursor = 0
        for ids in input_ids_list:
            ids = torch.as_tensor(ids, device=self.device)
            slots = (ids == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist()
            text = embed(ids.clamp(min=0))  # (L, hidden); image slots replaced below
            pieces = []
            start = 0
            for slot in slots:
                if image_features is None or image_cursor >= image_features.shape[0]:
                    raise ValueError("prompt has more <image> slots than images were given")
                pieces.append(text[start:slot])
                pieces.append(image_features[image_cursor])
                image_cursor += 1
                start = slot + 1
            pieces.append(text[start:])
            rows.append(torch.cat(pieces, dim=0))
        if image_features is not None and image_cursor != image_features.shape[0]:
            raise ValueError(f"{image_features.shape[0]} images given for {image_cursor} <image> slots")
        return left_pad(rows)

    @torch.no_grad()
    def generate(self, inputs=None, images=None, image_sizes=None, **kwargs):
        """Original-style generate: ids with image slots plus `images`; returns new tokens only."""
        if inputs is None or images is None or "inputs_embeds" in kwargs:
            return super().generate(inputs, **kwargs)
        ids = inputs if inputs.dim() == 2 else inputs.unsqueeze(0)
        embeds, mask, _ = self.embed_multimodal(list(ids), self.encode_images(images))
        processors = kwargs.pop("logits_processor", None) or LogitsProcessorList()
        if self.scored_vocab_size < self.config.text_config.vocab_size:
            processors.append(SuppressIdsFrom(self.scored_vocab_size))
        return super().generate(inputs_embeds=embeds, attention_mask=mask, logits_processor=processors, **kwargs)


def left_pad(rows: list[torch.Tensor]):
    """Stack (L_i, hidden) rows into (B, T, hidden) with padding on the left.

    Returns embeds, attention_mask (B, T) with 1 on real positions, and position_ids (B, T)
    counting from 0 at each row's first real position (pads get 0).
    """
    longest = max(r.shape[0] for r in rows)
    hidden = rows[0].shape[1]
    embeds = rows[0].new_zeros((len(rows), longest, hidden))
    mask = torch.zeros((len(rows), longest), dtype=torch.long, device=rows[0].device)
    for i, r in enumerate(rows):
        embeds[i, longest - r.shape[0] :] = r
        mask[i, longest - r.shape[0] :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return embeds, mask, positions
