"""Teacher-forced answers in rows of their own: the next-token logits at each answer step.

A row is a prompt (with all, some or none of its image tokens) followed by the answer's tokens
but the last, with explicit RoPE positions. Hiding image tokens from every query (an attention
mask with zeros on their columns, as masking probes do) is the same computation as leaving
them out of the sequence while the other tokens keep their positions: no query can read a
hidden key, and what a hidden position computes itself is never read. Leaving them out saves
their share of the work.
"""

from __future__ import annotations

import torch

from llava.constants import IMAGE_TOKEN_INDEX
from llava.model.generation import masked_logits


def image_row(model, prompt_ids: list[int], features: torch.Tensor, kept: torch.Tensor | None = None):
    """(embeds (T, D), positions (T,)) of a prompt with one image slot, keeping the image rows `kept`.

    features: (N, D) the image's projected features; kept: sorted indices of the image positions
    kept (None = all). Every token keeps the position it has with the whole image.
    """
    slot = prompt_ids.index(IMAGE_TOKEN_INDEX)
    embed = model.get_input_embeddings()
    before = embed(torch.tensor(prompt_ids[:slot], device=model.device))
    after = embed(torch.tensor(prompt_ids[slot + 1 :], device=model.device))
    num_patches = features.shape[0]
    kept = torch.arange(num_patches) if kept is None else kept.cpu()
    positions = torch.cat([torch.arange(slot), slot + kept,
                           torch.arange(slot + num_patches, slot + num_patches + len(prompt_ids) - slot - 1)])
    embeds = torch.cat([before, features[kept.to(features.device)], after])
    return embeds, positions


def text_row(model, ids: list[int]):
    """(embeds (T, D), positions (T,)) of a prompt without an image."""
    if IMAGE_TOKEN_INDEX in ids:
        raise ValueError("a text row cannot hold an image slot")
    return model.get_input_embeddings()(torch.tensor(ids, device=model.device)), torch.arange(len(ids))


def pad_rows(rows):
    """Left-pad (embeds, positions) rows: embeds (B, T, D), attention mask (B, T), positions (B, T)."""
    longest = max(e.shape[0] for e, _ in rows)
    first = rows[0][0]
    embeds = first.new_zeros((len(rows), longest, first.shape[1]))
    mask = torch.zeros((len(rows), longest), dtype=torch.long, device=first.device)
    positions = torch.zeros((len(rows), longest), dtype=torch.long, device=first.device)
    for i, (e, p) in enumerate(rows):
        embeds[i, longest - e.shape[0] :] = e
        mask[i, longest - e.shape[0] :] = 1
        positions[i, longest - e.shape[0] :] = p.to(first.device)
    return embeds, mask, positions


@torch.inference_mode()
def answer_step_logits(model, rows, answer_lengths: list[int]) -> list[torch.Tensor]:
    """One forward over the rows; row i's last `answer_lengths[i]` positions' logits, (n_i, V) float32
    on the model's device.

    Each row ends with its answer's tokens but the last, so those positions predict the answer's
    tokens one by one (the first from the prompt's last position).
    """
    embeds, mask, positions = pad_rows(rows)
    keep = max(answer_lengths)
    out = model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, logits_to_keep=keep)
    logits = out.logits  # (B, keep, V)
    return [masked_logits(model, logits[i, keep - n :]) for i, n in enumerate(answer_lengths)]
