"""Attention of LLaVA-1.5's answer tokens, captured during greedy decoding at sdpa cost.

Which rows: the answer token t is produced by one query, the last position of the forward
pass that computed its logits (the prompt's last position ":" for t = 0, the position of
token t - 1 afterwards). We keep that query's attention row, per layer and head: the same rows
`generate(output_attentions=True)` returns, without eager attention anywhere.

How: a custom attention function, registered with transformers' `AttentionInterface` as
"sdpa_capture", computes every layer's output with transformers' own sdpa function and, for
the LAST query of each call only, also softmax(q k^T * scale + mask) in float32 (GQA handled
by grouping query heads over their key/value head). `attention_capture(model, collector)`
switches only the language model to it (the CLIP tower keeps its own implementation) and
hands each decoder attention module the collector; leaving the block restores both.

What is kept (per layer, per step, float32): the 576 image columns, (B, heads, 576), and the
attention mass summed over each prompt region, (B, heads, R), for the regions of
`REGIONS`. For LLaVA-1.5-7B that is 32 x 32 x 581 x 4 bytes = 2.4 MB per question and
answer token, moved to the CPU after every step, so the GPU never holds more than one step.

>>> REGIONS
('bos', 'system', 'image', 'question', 'answer')
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from llava.constants import IMAGE_TOKEN_INDEX
from llava.model.generation import StepRunner

CAPTURE_ATTENTION = "sdpa_capture"
COLLECTOR_ATTRIBUTE = "answer_attention_collector"  # set on each decoder attention module while capturing

# Regions of the key positions, in sequence order. 'bos' is the first token (the attention
# sink), 'system' the rest of the text before the image (system prompt and "USER:"),
# 'image' the 576 image positions, 'question' the text after the image up to the prompt's end
# ("\n", the question, " ASSISTANT:"), 'answer' the answer tokens generated so far.
REGIONS = ("bos", "system", "image", "question", "answer")
PAD_REGION = -1


# ---------------------------------------------------------------------------------------------
# The attention function
# ---------------------------------------------------------------------------------------------


def last_query_weights(query: torch.Tensor, key: torch.Tensor, attention_mask, scaling: float) -> torch.Tensor:
    """Softmax attention weights of the last query position, in float32: (B, heads, kv).

    query (B, heads, q, d); key (B, kv_heads, kv, d) with heads a multiple of kv_heads (GQA:
    query head h reads key/value head h // (heads / kv_heads), as `repeat_kv` does);
    attention_mask None (causal, nothing hidden from the last query), bool (B|1, 1|heads, q, kv)
    True where visible, or additive float of that shape.
    """
    batch, heads, _, dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    last = query[:, :, -1, :].float().reshape(batch, kv_heads, heads // kv_heads, dim)  # (B, kvh, G, d)
    scores = torch.matmul(last, key.float().transpose(-1, -2)) * scaling  # (B, kvh, G, kv)
    scores = scores.reshape(batch, heads, kv_len)  # (B, heads, kv)
    if attention_mask is not None:
        row = attention_mask[:, :, -1, -kv_len:]  # (B|1, 1|heads, kv)
        if row.dtype == torch.bool:
            scores = scores.masked_fill(~row, float("-inf"))
        else:
            scores = scores + row.float()
    return torch.softmax(scores, dim=-1)


def sdpa_capture_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers attention interface: sdpa output, plus the last query's weights to the collector."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    output, _ = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                       **kwargs)
    collector = getattr(module, COLLECTOR_ATTRIBUTE, None)
    if collector is not None:
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        collector.record(module.layer_idx, last_query_weights(query, key, attention_mask, scale))
    return output, None


def register_capture_attention() -> None:
    """Register "sdpa_capture" with transformers (attention function + sdpa's mask format). Idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(CAPTURE_ATTENTION, sdpa_capture_attention)
    # Without a registered mask function transformers would build no mask at all (padding ignored).
    AttentionMaskInterface.register(CAPTURE_ATTENTION, sdpa_mask)


def decoder_attention_modules(model) -> list:
    """The language model's self-attention modules, in layer order."""
    return [layer.self_attn for layer in model.model.language_model.layers]


@contextlib.contextmanager
def attention_capture(model, collector):
    """Within the block the language model runs "sdpa_capture" and reports to `collector`.

    Only the text sub-config is switched (`set_attn_implementation({"text_config": ...})`); the
    vision tower keeps its implementation. The previous text implementation is restored on exit.
    """
    register_capture_attention()
    with text_attention_reporting_to(model, CAPTURE_ATTENTION, collector):
        yield collector


@contextlib.contextmanager
def text_attention_reporting_to(model, implementation: str, collector, attribute: str = COLLECTOR_ATTRIBUTE):
    """Within the block the language model runs the registered `implementation`, and every decoder
    attention module carries `collector` as `attribute`; the previous implementation is restored on exit."""
    previous = model.config.text_config._attn_implementation
    modules = decoder_attention_modules(model)
    model.set_attn_implementation({"text_config": implementation})
    for module in modules:
        setattr(module, attribute, collector)
    try:
        yield collector
    finally:
        for module in modules:
            if hasattr(module, attribute):
                delattr(module, attribute)
        model.set_attn_implementation({"text_config": previous})


# ---------------------------------------------------------------------------------------------
# Prompt layout and the collector
# ---------------------------------------------------------------------------------------------


@dataclass
class PromptLayout:
    """Which key column of a left-padded batch belongs to which region."""

    region_ids: torch.Tensor  # (B, T) long: index into REGIONS, PAD_REGION on left padding
    image_columns: torch.Tensor  # (B, N) long: the N image positions of each row


def prompt_layout(input_ids_list, num_image_tokens: int, total_length: int) -> PromptLayout:
    """Layout of prompts as `embed_multimodal` lays them out (left padding, N image positions at the slot).

    >>> ids = [torch.tensor([1, 5, 6, IMAGE_TOKEN_INDEX, 7, 8]), torch.tensor([1, IMAGE_TOKEN_INDEX, 7])]
    >>> layout = prompt_layout(ids, num_image_tokens=3, total_length=8)
    >>> layout.region_ids.tolist()
    [[0, 1, 1, 2, 2, 2, 3, 3], [-1, -1, -1, 0, 2, 2, 2, 3]]
    >>> layout.image_columns.tolist()
    [[3, 4, 5], [4, 5, 6]]
    """
    rows, image_columns = [], []
    for ids in input_ids_list:
        ids = torch.as_tensor(ids).cpu()
        slots = (ids == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist()
        if len(slots) != 1:
            raise ValueError(f"attention capture needs exactly one <image> slot per prompt, found {len(slots)}")
        slot = slots[0]
        length = len(ids) - 1 + num_image_tokens
        pad = total_length - length
        if pad < 0:
            raise ValueError(f"prompt of {length} positions does not fit {total_length}")
        region = torch.full((total_length,), PAD_REGION, dtype=torch.long)
        region[pad : pad + slot] = REGIONS.index("system")
        if slot > 0 and int(ids[0]) != IMAGE_TOKEN_INDEX:
            region[pad] = REGIONS.index("bos")
        start = pad + slot
        region[start : start + num_image_tokens] = REGIONS.index("image")
        region[start + num_image_tokens :] = REGIONS.index("question")
        rows.append(region)
        image_columns.append(torch.arange(start, start + num_image_tokens))
    return PromptLayout(torch.stack(rows), torch.stack(image_columns))


class AnswerAttentionCollector:
    """Receives each layer's last-query weights; keeps the image columns and the region sums per step.

    A step is one forward pass of the language model (the prefill, then one per new token);
    `end_step()` moves the step's tensors to the CPU.
    """

    def __init__(self, layout: PromptLayout, num_layers: int, device):
        self.region_ids = layout.region_ids.to(device)  # (B, T)
        self.image_columns = layout.image_columns.to(device)  # (B, N)
        self.num_layers = num_layers
        self._one_hot_cache: tuple[int, torch.Tensor] | None = None
        self._pending: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.image_steps: list[torch.Tensor] = []  # each (B, L, H, N) on the CPU
        self.region_steps: list[torch.Tensor] = []  # each (B, L, H, R) on the CPU

    def _region_one_hot(self, kv_len: int) -> torch.Tensor:
        """(B, kv, R) float32 indicator of each key column's region; columns past the prompt are answers."""
        if self._one_hot_cache is None or self._one_hot_cache[0] != kv_len:
            batch, prompt_len = self.region_ids.shape
            answer = torch.full((batch, kv_len - prompt_len), REGIONS.index("answer"), dtype=torch.long,
                                device=self.region_ids.device)
            ids = torch.cat([self.region_ids, answer], dim=1)[:, :kv_len]  # (B, kv)
            one_hot = torch.zeros(batch, kv_len, len(REGIONS), device=ids.device)
            one_hot.scatter_(2, ids.clamp(min=0)[:, :, None], (ids >= 0).float()[:, :, None])
            self._one_hot_cache = (kv_len, one_hot)
        return self._one_hot_cache[1]

    def record(self, layer: int, weights: torch.Tensor) -> None:
        """weights (B, H, kv) float32 of one layer's last query."""
        batch, heads, kv_len = weights.shape
        index = self.image_columns[:, None, :].expand(batch, heads, -1)  # (B, H, N)
        image = weights.gather(2, index)  # (B, H, N)
        regions = torch.bmm(weights, self._region_one_hot(kv_len))  # (B, H, R)
        self._pending[layer] = (image, regions)

    def end_step(self) -> None:
        if sorted(self._pending) != list(range(self.num_layers)):
            raise RuntimeError(f"captured layers {sorted(self._pending)} of {self.num_layers}: "
                               "is the language model running the 'sdpa_capture' attention?")
        ordered = [self._pending[layer] for layer in range(self.num_layers)]
        self.image_steps.append(torch.stack([img for img, _ in ordered], dim=1).cpu())  # (B, L, H, N)
        self.region_steps.append(torch.stack([reg for _, reg in ordered], dim=1).cpu())  # (B, L, H, R)
        self._pending = {}


# ---------------------------------------------------------------------------------------------
# Greedy decoding with capture
# ---------------------------------------------------------------------------------------------


@dataclass
class AnswerAttention:
    """One greedy answer and the attention rows that produced its tokens.

    Row t of `image` / `regions` is the attention of the query that produced token_ids[t].
    """

    token_ids: list[int]  # (n,) the EOS included when generated
    token_logprobs: list[float]  # (n,)
    ends_with_eos: bool
    image: np.ndarray  # (n, L, H, N) float32: attention to each image position
    regions: np.ndarray  # (n, L, H, R) float32: attention mass per region of REGIONS; sums to 1 over R
    region_names: tuple[str, ...] = REGIONS


@torch.no_grad()
def greedy_with_attention(model, embeds, attention_mask, position_ids, layout: PromptLayout,
                          max_new_tokens: int, eos_token_id: int) -> list[AnswerAttention]:
    """Greedy answers of a left-padded batch (as `llava.model.generation.greedy_decode`) with their attention."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    num_layers = len(decoder_attention_modules(model))
    collector = AnswerAttentionCollector(layout, num_layers, embeds.device)
    batch = embeds.shape[0]
    tokens: list[list[int]] = [[] for _ in range(batch)]
    logprobs: list[list[float]] = [[] for _ in range(batch)]
    finished = torch.zeros(batch, dtype=torch.bool, device=embeds.device)
    with attention_capture(model, collector):
        runner = StepRunner(model, embeds, attention_mask, position_ids)
        collector.end_step()
        logits = runner.logits
        for step in range(max_new_tokens):
            chosen = logits.argmax(dim=-1)  # (B,)
            chosen_logprobs = torch.log_softmax(logits, dim=-1).gather(1, chosen[:, None])[:, 0]
            for row, (token, logprob) in enumerate(zip(chosen.tolist(), chosen_logprobs.tolist())):
                if not finished[row]:
                    tokens[row].append(token)
                    logprobs[row].append(logprob)
            finished |= chosen == eos_token_id
            if bool(finished.all()) or step == max_new_tokens - 1:
                break
            logits = runner.step(torch.where(finished, torch.full_like(chosen, eos_token_id), chosen))  # (B, V) masked
            collector.end_step()
    image = torch.stack(collector.image_steps, dim=1)  # (B, steps, L, H, N)
    regions = torch.stack(collector.region_steps, dim=1)  # (B, steps, L, H, R)
    return [
        AnswerAttention(
            token_ids=tokens[row],
            token_logprobs=logprobs[row],
            ends_with_eos=bool(tokens[row]) and tokens[row][-1] == eos_token_id,
            image=image[row, : len(tokens[row])].numpy(),
            regions=regions[row, : len(tokens[row])].numpy(),
        )
        for row in range(batch)
    ]


@torch.no_grad()
def answer_with_attention(model, input_ids_list, pixel_values: torch.Tensor, max_new_tokens: int,
                          eos_token_id: int) -> list[AnswerAttention]:
    """Encode the images, lay out the prompts and decode greedily with attention capture.

    input_ids_list: B prompt id tensors with one IMAGE_TOKEN_INDEX slot; pixel_values (B, 3, 336, 336).
    """
    features = model.encode_images(pixel_values)  # (B, N, hidden)
    embeds, mask, positions = model.embed_multimodal(list(input_ids_list), features)
    layout = prompt_layout(input_ids_list, features.shape[1], embeds.shape[1])
    return greedy_with_attention(model, embeds, mask, positions, layout, max_new_tokens, eos_token_id)
