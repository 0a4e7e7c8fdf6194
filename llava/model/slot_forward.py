"""One decode step of LLaVA's Llama language model for many answer rows over a shared context.

The rows are slots (G, S): G context rows of a KV cache (a prompt, or an image prefix with its
questions and any answer tokens already fed) and S answer rows per context row. Every slot
sees the context columns its mask allows (stored once per context row, however many slots read
them) plus its own answer columns, which live in a preallocated buffer (G, Hkv, S, capacity, D)
written one column per step. Shapes are fixed and the step index is a device tensor, so a step
can be captured once as a CUDA graph and replayed.

The arithmetic is that of transformers' eager Llama attention: bf16 scores, a float32 softmax,
bf16 probabilities; the layers' own modules do everything else.
"""

from __future__ import annotations

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb


def supports_slot_forward(model) -> bool:
    """True for a Llama language model with plain rotary embeddings (LLaVA-1.5)."""
    text = model.config.text_config
    rope = getattr(text, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
    return text.model_type == "llama" and rope_type == "default"


class SlotForward:
    """The language model of `model` stepping (G, S) slots; the context KV is read, never copied."""

    def __init__(self, model, context_kv: list[tuple[torch.Tensor, torch.Tensor]], context_visible: torch.Tensor,
                 first_positions: torch.Tensor, steps: int, capacity: int):
        """context_kv: per layer (keys, values), each (G, Hkv, C, D); context_visible: (G, S, C) bool;
        first_positions: (G, S) position id of each slot's first fed token; steps: the most tokens a
        slot will feed; capacity: answer columns allocated now (`grow` adds more)."""
        self.model = model
        self.lm = model.model.language_model
        self.context_kv = context_kv
        groups, slots, _ = context_visible.shape
        self.shape = (groups, slots)
        attention = self.lm.layers[0].self_attn
        self.head_dim = attention.head_dim
        self.kv_heads = model.config.text_config.num_key_value_heads
        self.query_heads = model.config.text_config.num_attention_heads
        self.scaling = attention.scaling
        dtype, device = model.text_dtype, context_visible.device
        zero = torch.zeros((), dtype=torch.float32, device=device)
        self.context_bias = torch.where(context_visible, zero, float("-inf"))[:, None, None]  # (G, 1, 1, S, C)
        self.first_positions = first_positions
        # Rotary tables for every position a slot can reach, in the dtype the layers see.
        reach = int(first_positions.max()) + steps + 1
        probe = torch.zeros(1, dtype=dtype, device=device)
        cos, sin = self.lm.rotary_emb(probe, torch.arange(reach, device=device)[None])
        self.cos, self.sin = cos[0], sin[0]  # (P, D)
        self.capacity = 0
        self.answer_kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.grow(capacity)

    def grow(self, capacity: int) -> None:
        """Answer buffers of `capacity` columns, keeping what is written (zeros elsewhere: never NaN)."""
        groups, slots = self.shape
        device, dtype = self.cos.device, self.model.text_dtype
        shape = (groups, self.kv_heads, slots, capacity, self.head_dim)
        grown = []
        for layer in range(len(self.lm.layers)):
            keys, values = torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device)
            if self.answer_kv:
                old_keys, old_values = self.answer_kv[layer]
                keys[:, :, :, : self.capacity] = old_keys
                values[:, :, :, : self.capacity] = old_values
                self.answer_kv[layer] = (None, None)  # free the old pair before the next layer's
            grown.append((keys, values))
        self.answer_kv = grown
        self.capacity = capacity

    def __call__(self, tokens: torch.Tensor, step: torch.Tensor, width: int) -> torch.Tensor:
        """Feed tokens (G, S) as answer column `step` ((1,) long); attend to the first `width` answer
        columns (>= step + 1). Returns (G, S, V) float32 logits, ids past the text vocabulary -inf."""
        groups, slots = self.shape
        positions = (self.first_positions + step).flatten()  # (G*S,)
        cos = self.cos.index_select(0, positions).view(groups, slots, -1)  # (G, S, D)
        sin = self.sin.index_select(0, positions).view(groups, slots, -1)
        columns = torch.arange(width, device=tokens.device)
        answer_bias = torch.where(columns <= step, 0.0, float("-inf"))  # (width,) float32
        hidden = self.lm.embed_tokens(tokens)  # (G, S, H)
        for layer, (context, answer) in zip(self.lm.layers, zip(self.context_kv, self.answer_kv)):
            residual = hidden
            hidden = residual + self._attention(layer, layer.input_layernorm(hidden), cos, sin, context, answer,
                                                step, width, answer_bias)
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        logits = self.model.lm_head(self.lm.norm(hidden)).float()  # (G, S, V)
        vocab = self.model.scored_vocab_size
        if vocab < logits.shape[-1]:
            logits[..., vocab:] = float("-inf")
        return logits

    def _attention(self, layer, hidden, cos, sin, context, answer, step, width, answer_bias):
        groups, slots = self.shape
        attention, kv, d = layer.self_attn, self.kv_heads, self.head_dim
        per_kv = self.query_heads // kv  # query heads per key/value head
        q = attention.q_proj(hidden).view(groups, slots, self.query_heads, d).transpose(1, 2)  # (G, Hq, S, D)
        k = attention.k_proj(hidden).view(groups, slots, kv, d).transpose(1, 2)  # (G, Hkv, S, D)
        v = attention.v_proj(hidden).view(groups, slots, kv, d).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        answer_keys, answer_values = answer
        answer_keys.index_copy_(3, step, k.unsqueeze(3))  # column `step` of each slot
        answer_values.index_copy_(3, step, v.unsqueeze(3))
        keys, values = answer_keys[:, :, :, :width], answer_values[:, :, :, :width]  # (G, Hkv, S, W, D)
        context_keys, context_values = context  # (G, Hkv, C, D)
        q = q.reshape(groups, kv, per_kv, slots, d)  # query head h reads key/value head h // per_kv
        context_scores = torch.matmul(q.reshape(groups, kv, per_kv * slots, d), context_keys.transpose(-1, -2))
        answer_scores = torch.matmul(q.transpose(2, 3), keys.transpose(-1, -2))  # (G, Hkv, S, per_kv, W)
        context_length = context_keys.shape[2]
        scores = torch.cat([
            context_scores.view(groups, kv, per_kv, slots, context_length).float() * self.scaling + self.context_bias,
            answer_scores.transpose(2, 3).float() * self.scaling + answer_bias,
        ], dim=-1)  # (G, Hkv, per_kv, S, C + W)
        probs = scores.softmax(dim=-1).to(values.dtype)
        context_out = torch.matmul(probs[..., :context_length].reshape(groups, kv, per_kv * slots, context_length),
                                   context_values).view(groups, kv, per_kv, slots, d)
        answer_out = torch.matmul(probs[..., context_length:].transpose(2, 3), values).transpose(2, 3)
        out = (context_out.float() + answer_out.float()).to(values.dtype)  # (G, Hkv, per_kv, S, D)
        out = out.reshape(groups, self.query_heads, slots, d).transpose(1, 2).reshape(groups, slots, -1)
        return attention.o_proj(out)
