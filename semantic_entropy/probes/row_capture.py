"""Attention rows of chosen queries, and hidden states of chosen layers, during a forward pass.

`row_capture(model, collector)` switches the language model to "sdpa_rows": every layer runs
transformers' sdpa, and while `collector.active` is set it also computes, in float32, the
softmax attention weights of the chosen (batch row, query index) pairs of the call and keeps
their mean over heads on the image columns (the rest of the row is dropped at once). This is
the rows `output_attentions=True` would give, at sdpa cost, for any query of a call, where
`semantic_entropy.attention.capture` keeps the last query only.

`hidden_state_capture(model, indices)` keeps the latest output of the hidden states numbered as
transformers' `output_hidden_states`: 0 the embeddings, i (1 <= i < L) the output of decoder
layer i - 1, L the final normed states.
"""

from __future__ import annotations

import contextlib

import torch

from semantic_entropy.attention.capture import text_attention_reporting_to

ROW_CAPTURE = "sdpa_rows"
COLLECTOR_ATTRIBUTE = "query_row_collector"


def query_row_weights(query: torch.Tensor, key: torch.Tensor, attention_mask, scaling: float,
                      row: int, cols: torch.Tensor) -> torch.Tensor:
    """Softmax weights (n, heads, kv) float32 of the queries `cols` (n,) of batch row `row`.

    query (B, heads, q, d); key (B, kv_heads, kv, d), heads a multiple of kv_heads (query head
    h reads key head h // (heads / kv_heads)); attention_mask None (causal), bool (B|1, 1|heads,
    q, kv) True where visible, or additive float of that shape.
    """
    heads, q_len, dim = query.shape[1:]
    kv_heads, kv_len = key.shape[1], key.shape[2]
    chosen = query[row][:, cols, :].float().reshape(kv_heads, heads // kv_heads, len(cols), dim)  # (kvh, G, n, d)
    scores = torch.matmul(chosen, key[row].float().transpose(-1, -2)[:, None]) * scaling  # (kvh, G, n, kv)
    scores = scores.reshape(heads, len(cols), kv_len).transpose(0, 1)  # (n, heads, kv)
    if attention_mask is None:  # causal: query i of the call sits at key column kv - q + i
        hidden = torch.arange(kv_len, device=key.device)[None, :] > (kv_len - q_len + cols.to(key.device))[:, None]
        scores = scores.masked_fill(hidden[:, None, :], float("-inf"))
    else:
        mask = attention_mask[row if attention_mask.shape[0] > 1 else 0][:, cols, -kv_len:].transpose(0, 1)
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    return torch.softmax(scores, dim=-1)


class QueryRowCollector:
    """Head-mean attention of chosen queries on the image columns, per layer.

    rows, cols: (S,) the batch row and the query index within the call of each chosen query;
    image_columns: (B, N) the key columns of each batch row's image.
    """

    def __init__(self, rows: list[int], cols: list[int], image_columns: torch.Tensor, num_layers: int):
        self.by_row: dict[int, tuple[list[int], torch.Tensor]] = {}
        for s, (row, col) in enumerate(zip(rows, cols)):
            self.by_row.setdefault(row, ([], []))
            self.by_row[row][0].append(s)
            self.by_row[row][1].append(col)
        self.image_columns = image_columns
        self.num_selected = len(rows)
        self.num_layers = num_layers
        self.layers: dict[int, torch.Tensor] = {}
        self.active = False
        self._on_device: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] | None = None

    def _indices(self, device) -> list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per batch row: (row, its selected slots, its query columns, its image columns), moved to
        the device once: a copy from host memory per layer would stall the stream each time."""
        if self._on_device is None:
            self._on_device = [(row, torch.tensor(selected, device=device), torch.tensor(cols, device=device),
                                self.image_columns[row].to(device)) for row, (selected, cols) in self.by_row.items()]
        return self._on_device

    def record(self, layer: int, query, key, attention_mask, scaling: float) -> None:
        kept = torch.empty(self.num_selected, self.image_columns.shape[1], device=query.device)  # (S, N)
        for row, selected, cols, image in self._indices(query.device):
            weights = query_row_weights(query, key, attention_mask, scaling, row, cols)  # (n, H, kv)
            kept[selected] = weights[:, :, image].mean(dim=1)
        self.layers[layer] = kept

    def image_attention(self) -> torch.Tensor:
        """(S, L, N) on the CPU: every layer's head-mean weights on the image columns."""
        if sorted(self.layers) != list(range(self.num_layers)):
            raise RuntimeError(f"captured layers {sorted(self.layers)} of {self.num_layers}: "
                               "is the language model running the 'sdpa_rows' attention?")
        return torch.stack([self.layers[layer] for layer in range(self.num_layers)], dim=1).cpu()


def sdpa_rows_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers attention interface: sdpa's output; the chosen rows go to the collector."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    output, _ = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                       **kwargs)
    collector = getattr(module, COLLECTOR_ATTRIBUTE, None)
    if collector is not None and collector.active:
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        collector.record(module.layer_idx, query, key, attention_mask, scale)
    return output, None


@contextlib.contextmanager
def row_capture(model, collector: QueryRowCollector):
    """Within the block the language model runs "sdpa_rows" and reports to `collector` while it is active."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ROW_CAPTURE, sdpa_rows_attention)
    AttentionMaskInterface.register(ROW_CAPTURE, sdpa_mask)  # else no mask would be built
    with text_attention_reporting_to(model, ROW_CAPTURE, collector, COLLECTOR_ATTRIBUTE):
        yield collector


@contextlib.contextmanager
def hidden_state_capture(model, indices):
    """Yield {index: latest (B, T, D) output} for hidden-state indices as `output_hidden_states` numbers them."""
    language = model.model.language_model
    num_layers = len(language.layers)
    latest: dict[int, torch.Tensor] = {}
    hooks = []
    for index in sorted(set(indices)):
        if not 1 <= index <= num_layers:
            raise ValueError(f"hidden state {index} is not a layer output of a {num_layers}-layer model")
        module = language.norm if index == num_layers else language.layers[index - 1]

        def keep(_module, _inputs, output, index=index):
            latest[index] = output[0] if isinstance(output, tuple) else output

        hooks.append(module.register_forward_hook(keep))
    try:
        yield latest
    finally:
        for hook in hooks:
            hook.remove()
