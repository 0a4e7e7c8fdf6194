"""Batching for the model-backed judges: length-sorted batches and a greedy reply loop.

At scale a judge sees tens of thousands of pairs whose inputs differ in length by a factor of
two or more (answers of 30-60 words). Batching them in arrival order pads every row to the
longest one in its batch; sorting by token length first keeps rows of a batch alike, so
padding costs little and each forward pass does mostly real work. The verdicts do not depend
on the order (every row is computed independently under its attention mask), which the tests
check against one pair at a time.

A batch that runs out of device memory is retried in halves (`in_halves_on_oom`).

`greedy_replies` is the LLM judge's decoding: a KV-cached greedy loop over a left-padded
batch that stops a row at its EOS and stops the whole batch as soon as every row is done or,
through `is_settled`, its reply already fixes the verdict (the first label word of the reply
decides it, so decoding further cannot change it). Our own loop rather than `generate`, so
that those stops and the vocabulary limit (llava-hf's image and pad ids are never chosen)
apply, and so that it runs the bare language model of a LLaVA checkpoint.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of at most `batch_size`, longest inputs first.

    Longest first, so that a batch too large for the device fails at once, not at the end.
    Ties keep their original order.

    >>> length_sorted_batches([3, 9, 5, 9, 1], 2)
    [[1, 3], [2, 0], [4]]
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def in_halves_on_oom(run: Callable[[list[int]], list], batch: list[int]) -> list:
    """`run(batch)`, or, when the device runs out of memory, the same rows in two halves (again
    and again, down to one row): a window that does not fit is slower, not fatal. Results come
    back in `batch` order. Rows are independent, so the halves give the same verdicts.

    >>> def run(rows):
    ...     if len(rows) > 2:
    ...         raise torch.cuda.OutOfMemoryError("too big")
    ...     return [r * 10 for r in rows]
    >>> in_halves_on_oom(run, [1, 2, 3, 4, 5])
    [10, 20, 30, 40, 50]
    """
    try:
        return run(batch)
    except torch.cuda.OutOfMemoryError:
        if len(batch) == 1:
            raise
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    middle = len(batch) // 2
    return in_halves_on_oom(run, batch[:middle]) + in_halves_on_oom(run, batch[middle:])


def left_padded(token_lists: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and attention mask with every row right-aligned, so its next token follows it."""
    width = max(len(tokens) for tokens in token_lists)
    ids = torch.full((len(token_lists), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_lists), width), dtype=torch.long)
    for row, tokens in enumerate(token_lists):
        if tokens:
            ids[row, width - len(tokens) :] = torch.as_tensor(list(tokens), dtype=torch.long)
            mask[row, width - len(tokens) :] = 1
    return ids.to(device), mask.to(device)


def _cache_kwarg(model) -> str:
    """Name of the KV-cache argument of forward (renamed across transformers 5.x releases)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.no_grad()
def greedy_replies(model, token_lists: Sequence[Sequence[int]], *, pad_id: int, eos_id: int | None,
                   max_new_tokens: int, vocab_limit: int | None = None,
                   is_settled: Callable[[list[int]], bool] | None = None) -> list[list[int]]:
    """Greedy continuation ids of each prompt (its EOS, when generated, included).

    `vocab_limit`: ids >= it are never chosen. `is_settled(ids)`: True once a row's reply so
    far decides everything its caller reads from it; decoding stops when every row is settled
    or ended. The replies equal `generate(do_sample=False)`'s up to those stops.
    """
    from transformers import DynamicCache

    device = next(model.parameters()).device
    ids, mask = left_padded(token_lists, pad_id, device)  # (B, T)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T): 0 at each row's first real token
    cache = DynamicCache()
    kwarg = _cache_kwarg(model)
    replies: list[list[int]] = [[] for _ in token_lists]
    active = [True] * len(token_lists)
    next_position = positions[:, -1] + 1  # (B,)
    inputs = {"input_ids": ids, "position_ids": positions}
    for _ in range(max_new_tokens):
        out = model(**inputs, attention_mask=mask, use_cache=True, logits_to_keep=1, **{kwarg: cache})
        logits = out.logits[:, -1].float()  # (B, V)
        if vocab_limit is not None and vocab_limit < logits.shape[-1]:
            logits[:, vocab_limit:] = float("-inf")
        chosen = logits.argmax(-1)  # (B,)
        for row, token in enumerate(chosen.tolist()):
            if not active[row]:
                continue
            replies[row].append(token)
            if token == eos_id or (is_settled is not None and is_settled(replies[row])):
                active[row] = False
        if not any(active):
            break
        # Ended rows keep decoding (their tokens are discarded) so that shapes stay fixed.
        inputs = {"input_ids": chosen[:, None], "position_ids": next_position[:, None]}
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        next_position = next_position + 1
    return replies
