"""What the page shows of an attention run (`semantic_entropy.visualize_attention`'s output folder).

Per question of the run: the table row's statistics (image share, map entropy, hottest patch
and its box in original pixels, padding share, pointing game) and, where the run saved maps
(`--save-maps`, maps/q<ID>.npz), the aggregated 24 x 24 map, rebuilt exactly as the tool
aggregates it (`attention.stats.image_map`: heads reduced as the run's --head-reduce, mean over
its --layers and the answer tokens of `tokens_aggregated`). Maps travel as shares of the
image attention quantised to 0..255 of their maximum, base64-encoded (768 characters a map).
"""

from __future__ import annotations

import base64
import math
import os

import numpy as np

from llava.jsonl_io import iter_jsonl
from semantic_entropy.attention.files import STATS_FILE, map_file
from semantic_entropy.attention.stats import Aggregation, parse_layer_range
from semantic_entropy.browser.images import geometry
from semantic_entropy.browser.run_files import require_file
from semantic_entropy.runs.manifest import manifest_path, read_manifest

# Statistics of a table row shown on the page, page name -> row field.
SHOWN_STATISTICS = {"imageShare": "image_share", "questionShare": "question_share", "mapEntropy": "map_entropy",
                    "mapEntropyNormalized": "map_entropy_normalized", "hottestShare": "hottest_share",
                    "paddingShare": "padding_share"}


def aggregated_map(npz_path: str, token_rows, aggregation: Aggregation) -> np.ndarray:
    """(N,) image attention of the saved maps, aggregated as the tool aggregates (see the module docstring)."""
    with np.load(npz_path, allow_pickle=False) as saved:  # arrays only: nothing in the file is unpickled
        per_head = saved["image_head_mean" if aggregation.head_reduce == "mean" else "image_head_max"]  # (n, L, N)
    return per_head[np.asarray(token_rows)][:, list(aggregation.layers)].astype(np.float64).mean(axis=(0, 1))


def quantised_shares(weights: np.ndarray) -> tuple[str, float]:
    """(base64 of the map as 0..255 of its largest share, that share); shares sum to 1.

    >>> quantised_shares(np.array([1.0, 3.0, 0.0, 0.0]))
    ('Vf8AAA==', 0.75)
    """
    weights = np.asarray(weights, dtype=np.float64)
    total = float(weights.sum())
    shares = weights / total if total > 0 else np.zeros_like(weights)
    top = float(shares.max()) if shares.size else 0.0
    levels = np.round(255 * shares / top) if top > 0 else np.zeros_like(shares)
    return base64.b64encode(levels.astype(np.uint8).tobytes()).decode("ascii"), top


def row_aggregation(row: dict, settings: dict) -> Aggregation:
    """The run's aggregation (its manifest's --layers and --head-reduce) for this row's layer count."""
    return Aggregation(parse_layer_range(settings.get("layers"), int(row["num_layers"])),
                       settings.get("head_reduce", "mean"))


def question_attention(row: dict, settings: dict, attention_dir: str) -> dict:
    """The page's entry for one table row: statistics, geometry and, when saved, the quantised map."""
    entry = {"aggregation": row.get("aggregation"), "tokens": row.get("answer_tokens"),
             "hottest": [row.get("hottest_row"), row.get("hottest_col")], "hottestBox": row.get("hottest_box"),
             **{name: row.get(field) for name, field in SHOWN_STATISTICS.items()}}
    if row.get("width") and row.get("height"):
        entry["geometry"] = geometry(int(row["width"]), int(row["height"]))
    if "pointing_class" in row:
        entry["pointing"] = {"class": row["pointing_class"], "present": row.get("pointing_yes"),
                             "hit": row.get("pointing_hit"), "chance": row.get("pointing_chance")}
    npz = map_file(attention_dir, row["question_id"])
    if os.path.isfile(npz):
        weights = aggregated_map(npz, row["tokens_aggregated"], row_aggregation(row, settings))
        entry["map"], entry["mapTop"] = quantised_shares(weights)
        entry["grid"] = math.isqrt(len(weights))
    return entry


def attention_data(attention_dir: str, question_ids) -> dict:
    """{byId: question_id -> entry, settings, questions, withMaps, outsideRun} for the run's questions."""
    stats_path = require_file(os.path.join(attention_dir, STATS_FILE), "attention table (visualize_attention)")
    settings = (read_manifest(manifest_path(stats_path)) or {}).get("settings", {})
    wanted = set(question_ids)
    by_id, outside = {}, 0
    for _, row in iter_jsonl(stats_path):
        qid = str(row.get("question_id"))
        if qid in wanted:
            by_id[qid] = question_attention(row, settings, attention_dir)
        else:
            outside += 1
    return {"byId": by_id, "settings": settings, "questions": len(by_id),
            "withMaps": sum("map" in entry for entry in by_id.values()), "outsideRun": outside}
