"""Greedy decoding with a KV cache over left-padded multimodal batches.

Our own loop rather than `generate`, so that every step's log-probabilities are at hand and
ids outside the text vocabulary (llava-hf's image and pad rows) are never chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache


@dataclass
class Decoded:
    token_ids: list[int]  # generated ids, the EOS included when it was generated
    token_logprobs: list[float]  # log-softmax of the untempered logits at each chosen id
    ends_with_eos: bool


def masked_logits(model, logits: torch.Tensor) -> torch.Tensor:
    """(B, V) logits in float32 with ids >= the text vocabulary set to -inf."""
    logits = logits.float()
    if model.scored_vocab_size < logits.shape[-1]:
        logits[:, model.scored_vocab_size :] = float("-inf")
    return logits


class StepRunner:
    """Runs the language model one step at a time over a shared KV cache."""

    def __init__(self, model, embeds, attention_mask, position_ids):
        self.model = model
        self.cache = DynamicCache()
        self.cache_kwarg = model.cache_kwarg()
        self.attention_mask = attention_mask  # (B, T) grows by one column per step
        self.next_position = position_ids[:, -1] + 1  # (B,)
        out = model(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,
            **{self.cache_kwarg: self.cache},
        )
        self.logits = masked_logits(model, out.logits[:, -1])  # (B, V)

    def select_rows(self, index: torch.Tensor) -> None:
        """Keep, drop or repeat batch rows (with their KV cache): row i becomes old row index[i]."""
        index = index.to(self.attention_mask.device)
        self.cache.reorder_cache(index)
        self.attention_mask = self.attention_mask.index_select(0, index)
        self.next_position = self.next_position.index_select(0, index)

    def step_tree(self, token_ids: torch.Tensor, position_ids: torch.Tensor, attention_4d: torch.Tensor) -> torch.Tensor:
        """Feed several tokens per row that may belong to different branches of one prefix.

        token_ids, position_ids: (B, Q); attention_4d: (B, 1, Q, K + Q) bool, True where a
        query may attend to a cached (K) or new (Q) column. Returns (B, Q, V) masked logits.
        The 2D `attention_mask` is not used afterwards: tree decoding tracks visibility itself.
        """
        dtype = self.model.text_dtype
        additive = torch.zeros(attention_4d.shape, dtype=dtype, device=attention_4d.device)
        additive.masked_fill_(~attention_4d, torch.finfo(dtype).min)
        out = self.model(
            input_ids=token_ids,
            attention_mask=additive,
            position_ids=position_ids,
            use_cache=True,
            **{self.cache_kwarg: self.cache},
        )
        logits = out.logits.float()  # (B, Q, V)
        if self.model.scored_vocab_size < logits.shape[-1]:
            logits[..., self.model.scored_vocab_size :] = float("-inf")
        return logits

    def step(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (B,), return the next (B, V) masked logits."""
        ones = self.attention_mask.new_ones((self.attention_mask.shape[0], 1))
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=1)
        out = self.model(
            input_ids=token_ids[:, None],
            attention_mask=self.attention_mask,
            position_ids=self.next_position[:, None],
            use_cache=True,
            **{self.cache_kwarg: self.cache},
        )
        self.next_position = self.next_position + 1
        self.logits = masked_logits(self.model, out.logits[:, -1])
        return self.logits


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """(B, V) logits with the tokens outside the smallest set of mass >= top_p set to -inf."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop = cumulative - sorted_logits.softmax(dim=-1) >= top_p  # mass before this token already enough
    sorted_logits[drop] = float("-inf")
    return torch.full_like(logits, float("-inf")).scatter(1, order, sorted_logits)


def choose_tokens(logits: torch.Tensor, temperature: float, top_p: float | None, generators) -> torch.Tensor:
    """Argmax when temperature is 0, else one multinomial draw per row from its own generator."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    scaled = logits / temperature
    if top_p is not None and top_p < 1.0:
        scaled = top_p_filter(scaled, top_p)
    probs = scaled.softmax(dim=-1)
    rows = [torch.multinomial(probs[i], 1, generator=generators[i]) for i in range(probs.shape[0])]
    return torch.cat(rows)


@torch.no_grad()
def decode(model, embeds, attention_mask, position_ids, max_new_tokens: int, eos_token_id: int,
           temperature: float = 0.0, top_p: float | None = None, generators=None) -> list[Decoded]:
    """One answer per row of a left-padded batch; each row stops at its EOS or `max_new_tokens`.

    temperature 0 is greedy; otherwise `generators` holds one torch.Generator per row, so a
    row's draws do not depend on the rest of the batch.
    """
    runner = StepRunner(model, embeds, attention_mask, position_ids)
    batch = embeds.shape[0]
    answers = [Decoded([], [], False) for _ in range(batch)]
    finished = torch.zeros(batch, dtype=torch.bool, device=embeds.device)
    logits = runner.logits
    for step in range(max_new_tokens):
        logprobs = torch.log_softmax(logits, dim=-1)
        chosen = choose_tokens(logits, temperature, top_p, generators)  # (B,)
        chosen_logprobs = logprobs.gather(1, chosen[:, None])[:, 0].tolist()
        for row, (token, logprob) in enumerate(zip(chosen.tolist(), chosen_logprobs)):
            if finished[row]:
                continue
            answers[row].token_ids.append(token)
            answers[row].token_logprobs.append(logprob)
            answers[row].ends_with_eos = token == eos_token_id
        finished |= chosen == eos_token_id
        if bool(finished.all()) or step == max_new_tokens - 1:
            break
        logits = runner.step(torch.where(finished, torch.full_like(chosen, eos_token_id), chosen))
    return answers


def greedy_decode(model, embeds, attention_mask, position_ids, max_new_tokens: int, eos_token_id: int) -> list[Decoded]:
    return decode(model, embeds, attention_mask, position_ids, max_new_tokens, eos_token_id)
