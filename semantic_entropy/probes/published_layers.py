"""Layer choices published for 32-layer LLaVA-1.5-7B, carried over to a model of any depth.

The detectors of `semantic_entropy.baseline_probes` read attention or hidden states at layers
their authors chose for LLaVA-1.5-7B (32 decoder layers). A model of L layers uses the same
share of its depth: layer i of 32 becomes round(i * L / 32), so a 32-layer model uses the
published layers exactly. A range keeps at least one layer.
"""

from __future__ import annotations

REFERENCE_LAYERS = 32  # LLaVA-1.5-7B's decoder layers, where the published ranges were chosen


def scaled_layer(index: int, num_layers: int) -> int:
    """Layer `index` of a 32-layer model at the same depth share of a `num_layers` model.

    >>> scaled_layer(10, 32), scaled_layer(10, 40), scaled_layer(10, 2)
    (10, 12, 1)
    """
    return int(round(index * num_layers / REFERENCE_LAYERS))


def scaled_layer_range(start: int, end: int, num_layers: int) -> tuple[int, int]:
    """The half-open range [start, end) of a 32-layer model, scaled to `num_layers` (never empty).

    >>> scaled_layer_range(10, 25, 32), scaled_layer_range(5, 19, 2), scaled_layer_range(10, 25, 2)
    ((10, 25), (0, 1), (1, 2))
    """
    if num_layers < 1 or not 0 <= start < end <= REFERENCE_LAYERS:
        raise ValueError(f"bad layer range [{start}, {end}) for a model of {num_layers} layers")
    first = min(scaled_layer(start, num_layers), num_layers - 1)
    return first, max(first + 1, min(scaled_layer(end, num_layers), num_layers))


def parse_range(text: str | None, default: tuple[int, int], num_layers: int) -> tuple[int, int]:
    """A flag's 'a:b' (this model's layers, half-open) or, when None, the published `default` scaled.

    >>> parse_range(None, (5, 19), 32), parse_range("2:4", (5, 19), 32)
    ((5, 19), (2, 4))
    >>> parse_range("4:2", (5, 19), 32)
    Traceback (most recent call last):
    ...
    ValueError: layer range '4:2' must be a:b with 0 <= a < b <= 32
    """
    if text is None:
        return scaled_layer_range(*default, num_layers)
    try:
        start, end = (int(part) for part in text.split(":"))
    except ValueError:
        start, end = -1, -1
    if not 0 <= start < end <= num_layers:
        raise ValueError(f"layer range {text!r} must be a:b with 0 <= a < b <= {num_layers}")
    return start, end
