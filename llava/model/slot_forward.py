"""One decode step of LLaVA's Llama language model for many answer rows over a shared context.

The rows are slots (G, S): G context rows (a prompt, or an image prefix with its questions and
any answer tokens already fed) and S answer rows per context row. Each layer keeps one KV
buffer per context row, (G, Hkv, C' + S * capacity, D): the context's C columns (padded to C'),
then the answer columns time-major, column C' + t * S + s holding slot s's token of step t. A
step is then one scaled-dot-product attention per layer: the S queries of a row read the row's
context once and the answer columns written so far (a prefix of the buffer), under a mask that
lets each slot see its visible context columns and its own answer columns. Shapes are fixed per
attention width and the step index is a device tensor, so a step can be captured once as a
CUDA graph and replayed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import rotate_half

ALIGN = 16  # columns: attention masks are fastest with rows aligned to 16 elements


def supports_slot_forward(model) -> bool:
    """True for a Llama language model with plain rotary embeddings (LLaVA-1.5)."""
    text = model.config.text_config
    rope = getattr(text, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
    return text.model_type == "llama" and rope_type == "default"


def _rms_norm(norm, hidden: torch.Tensor) -> torch.Tensor:
    """Llama's RMSNorm. On CUDA through PyTorch's fused kernel (two launches instead of about eight
    per norm, 65 norms a step); it normalises in float32 as Llama does, but its sum may round
    differently in the last bit. The CPU keeps Llama's own operations, bit for bit."""
    if not hidden.is_cuda:
        return norm(hidden)
    return norm.weight * F.rms_norm(hidden, (hidden.shape[-1],), eps=norm.variance_epsilon)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class SlotForward:
    """The language model of `model` stepping (G, S) slots over a copy of their context KV."""

    def __init__(self, model, context_kv: list[tuple[torch.Tensor, torch.Tensor]], context_rows: list[int],
                 context_visible: torch.Tensor, first_positions: torch.Tensor, steps: int, capacity: int):
        """context_kv: per layer (keys, values), each (B, Hkv, C, D), of which rows `context_rows` (G)
        are the slots' contexts; context_visible: (G, S, C) bool; first_positions: (G, S) position id
        of each slot's first fed token; steps: the most tokens a slot will feed; capacity: answer
        steps allocated now (`grow` adds more).

        The context is copied into the buffers: the caller may free `context_kv` afterwards.
        """
        self.model = model
        self.lm = model.model.language_model
        groups, slots, columns = context_visible.shape
        self.shape = (groups, slots)
        attention = self.lm.layers[0].self_attn
        self.head_dim = attention.head_dim
        self.kv_heads = model.config.text_config.num_key_value_heads
        self.query_heads = model.config.text_config.num_attention_heads
        self.scaling = attention.scaling
        dtype, device = model.text_dtype, context_visible.device
        self.context_columns = _round_up(columns, ALIGN)
        visible = F.pad(context_visible, (0, self.context_columns - columns))  # (G, S, C')
        zero = torch.zeros((), dtype=dtype, device=device)
        self.context_bias = torch.where(visible, zero, float("-inf"))[:, None]  # (G, 1, S, C')
        self.first_positions = first_positions
        self.slot_columns = self.context_columns + torch.arange(slots, device=device)  # (S,) answer column at step 0
        # Rotary tables for every position a slot can reach, in the dtype the layers see.
        reach = int(first_positions.max()) + steps + 1
        probe = torch.zeros(1, dtype=dtype, device=device)
        cos, sin = self.lm.rotary_emb(probe, torch.arange(reach, device=device)[None])
        self.cos, self.sin = cos[0], sin[0]  # (P, D)
        self.capacity = capacity
        self.kv = [self._buffers(capacity) for _ in context_kv]
        for (keys, values), (context_keys, context_values) in zip(self.kv, context_kv):
            if context_rows == list(range(context_keys.shape[0])):
                keys[:, :, :columns] = context_keys
                values[:, :, :columns] = context_values
                continue
            for group, row in enumerate(context_rows):  # row by row: no second copy of the context
                keys[group, :, :columns] = context_keys[row]
                values[group, :, :columns] = context_values[row]

    def _buffers(self, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Zeroed (G, Hkv, C' + S * capacity, D) keys and values (never NaN, even where masked)."""
        groups, slots = self.shape
        shape = (groups, self.kv_heads, self.context_columns + slots * capacity, self.head_dim)
        return tuple(torch.zeros(shape, dtype=self.model.text_dtype, device=self.cos.device) for _ in range(2))

    def grow(self, capacity: int) -> None:
        """Room for `capacity` answer steps, keeping what is written."""
        for layer, (keys, values) in enumerate(self.kv):
            used = keys.shape[2]
            self.kv[layer] = None  # the old pair goes before the next layer's new one comes
            new_keys, new_values = self._buffers(capacity)
            new_keys[:, :, :used] = keys
            new_values[:, :, :used] = values
            self.kv[layer] = (new_keys, new_values)
            del keys, values
        self.capacity = capacity

    def __call__(self, tokens: torch.Tensor, step: torch.Tensor, width: int) -> torch.Tensor:
        """Feed tokens (G, S) as answer step `step` ((1,) long); attend to the first `width` answer
        steps (>= step + 1). Returns (G, S, V) float32 logits, ids past the text vocabulary -inf."""
        groups, slots = self.shape
        positions = (self.first_positions + step).flatten()  # (G*S,)
        cos = self.cos.index_select(0, positions).view(groups, slots, -1)  # (G, S, D)
        sin = self.sin.index_select(0, positions).view(groups, slots, -1)
        columns = self.slot_columns + step * slots  # (S,) where this step's keys and values go
        mask = self._mask(step, width)  # (G, 1, S, C' + width * S)
        hidden = self.lm.embed_tokens(tokens)  # (G, S, H)
        for layer, kv in zip(self.lm.layers, self.kv):
            attended = self._attention(layer, _rms_norm(layer.input_layernorm, hidden), cos, sin, kv, columns, mask)
            hidden = hidden + attended
            hidden = hidden + layer.mlp(_rms_norm(layer.post_attention_layernorm, hidden))
        logits = self.model.lm_head(_rms_norm(self.lm.norm, hidden)).float()  # (G, S, V)
        vocab = self.model.scored_vocab_size
        if vocab < logits.shape[-1]:
            logits[..., vocab:] = float("-inf")
        return logits

    def _mask(self, step: torch.Tensor, width: int) -> torch.Tensor:
        """Additive mask: the slot's visible context, then its own answer columns up to `step`."""
        groups, slots = self.shape
        answer = torch.arange(width * slots, device=step.device)  # (W*S,) answer columns
        own = (answer % slots == torch.arange(slots, device=step.device)[:, None]) & (answer // slots <= step)
        answer_bias = torch.where(own, 0.0, float("-inf")).to(self.context_bias.dtype)  # (S, W*S)
        return torch.cat([self.context_bias, answer_bias.expand(groups, 1, slots, width * slots)], dim=-1)

    def _attention(self, layer, hidden, cos, sin, kv, columns, mask):
        groups, slots = self.shape
        attention, d = layer.self_attn, self.head_dim
        q = attention.q_proj(hidden).view(groups, slots, self.query_heads, d)
        k = attention.k_proj(hidden).view(groups, slots, self.kv_heads, d)
        v = attention.v_proj(hidden).view(groups, slots, self.kv_heads, d).transpose(1, 2)  # (G, Hkv, S, D)
        # Queries and keys rotated together: the same element-wise operations, half the launches.
        qk = torch.cat([q, k], dim=2).transpose(1, 2)  # (G, Hq + Hkv, S, D)
        qk = qk * cos[:, None] + rotate_half(qk) * sin[:, None]
        q, k = qk[:, : self.query_heads], qk[:, self.query_heads :]  # (G, Hq, S, D), (G, Hkv, S, D)
        keys, values = kv
        keys.index_copy_(2, columns, k)
        values.index_copy_(2, columns, v)
        length = mask.shape[-1]
        out = F.scaled_dot_product_attention(q, keys[:, :, :length], values[:, :, :length], attn_mask=mask,
                                             scale=self.scaling, enable_gqa=self.query_heads != self.kv_heads)
        return attention.o_proj(out.transpose(1, 2).reshape(groups, slots, -1))  # (G, S, H)
