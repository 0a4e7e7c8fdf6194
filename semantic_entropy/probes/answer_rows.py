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


@torch.inference_mode()
def answer_step_logits_after_prefix(model, prefix_ids: list[int], rows,
                                    answer_lengths: list[int]) -> list[torch.Tensor]:
    """`answer_step_logits` of rows that all begin with the text `prefix_ids` (the system prompt
    before the image), given without it: the prefix is run once and its KV cache serves every row.

    rows: (embeds (T_i, D), positions (T_i,)) of what follows the prefix, positions counted from
    the prefix's start (it holds positions 0..P-1). Returns row i's (n_i, V) float32 logits.
    """
    from transformers import DynamicCache

    device = model.device
    cache = DynamicCache()
    prefix = model.get_input_embeddings()(torch.tensor(prefix_ids, device=device))[None]  # (1, P, D)
    model(inputs_embeds=prefix, position_ids=torch.arange(len(prefix_ids), device=device)[None], use_cache=True,
          logits_to_keep=1, **{model.cache_kwarg(): cache})
    cache.reorder_cache(torch.zeros(len(rows), dtype=torch.long, device=device))  # every row reads the one prefix
    embeds, mask, positions = pad_rows(rows)  # (B, T, D), (B, T), (B, T)
    mask = torch.cat([mask.new_ones((len(rows), len(prefix_ids))), mask], dim=1)  # (B, P + T)
    keep = max(answer_lengths)
    out = model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=keep,
                **{model.cache_kwarg(): cache})
    logits = out.logits  # (B, keep, V)
    return [masked_logits(model, logits[i, keep - n :]) for i, n in enumerate(answer_lengths)]


def hidden_image_rows(model, features: torch.Tensor, image_of: list[int], kept: torch.Tensor, slot: int,
                      after_ids: list[list[int]]):
    """Rows for `answer_step_logits_after_prefix`: each question's kept image tokens, then its text
    after the image, every token at the position it has with the whole image; built with one
    transfer to the device.

    features: (G, N, D) the batch's images on the device; image_of: (Q,) each question's image;
    kept: (Q, M) sorted image positions kept per question (CPU); slot: the image's first position;
    after_ids: per question, its ids after the image (the question and the answer but its last token).
    """
    device = features.device
    num_patches = features.shape[1]
    kept = kept.to(device)
    images = features[torch.tensor(image_of, device=device)[:, None], kept]  # (Q, M, D)
    lengths = [len(ids) for ids in after_ids]
    text = model.get_input_embeddings()(torch.tensor([t for ids in after_ids for t in ids], device=device))
    rows = []
    for i, words in enumerate(text.split(lengths)):  # words (L_i, D)
        positions = torch.cat([slot + kept[i], torch.arange(slot + num_patches, slot + num_patches + lengths[i],
                                                            device=device)])
        rows.append((torch.cat([images[i], words]), positions))
    return rows
