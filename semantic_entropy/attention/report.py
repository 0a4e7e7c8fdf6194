"""Figures (matplotlib, Agg) and the self-contained HTML page of one question's answer attention.

Every figure is drawn on its own `matplotlib.figure.Figure` (no pyplot state) and returned as
PNG bytes; the page embeds them as base64, so it can be mailed or opened anywhere.
"""

from __future__ import annotations

import base64
import html
import io
import json

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from semantic_entropy.attention.geometry import heatmap_to_original, hottest_patch, patch_box_in_original
from semantic_entropy.attention.stats import to_grid

HEAT_ALPHA = 0.5
HEAT_CMAP = "jet"
REGION_COLOURS = {"bos": "#9e9e9e", "system": "#c7c7c7", "image": "#d62728", "question": "#1f77b4",
                  "answer": "#2ca02c"}


def figure_png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def overlay(axis, image: np.ndarray, weights: np.ndarray, title: str, smooth: bool, mark_hottest: bool = True):
    """Draw the (H, W, 3) original image with the (N,) patch map resampled onto it.

    The colour scale spans the map's range over the image's own pixels (padding is not shown).
    """
    height, width = image.shape[:2]
    grid = to_grid(weights)
    heat = heatmap_to_original(grid, width, height, smooth=smooth)  # (H, W)
    low, high = float(heat.min()), float(heat.max())
    axis.imshow(image)
    shown = axis.imshow(heat, cmap=HEAT_CMAP, alpha=HEAT_ALPHA, vmin=low, vmax=max(high, low + 1e-12),
                        extent=(0, width, height, 0), interpolation="nearest")
    if mark_hottest:
        row, col = hottest_patch(grid)
        box = patch_box_in_original(row, col, width, height, grid.shape[0])
        if box is None:
            title += f"\nhottest patch ({row}, {col}) is padding"
        else:
            axis.add_patch(Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False,
                                     edgecolor="white", linewidth=1.5))
    axis.set_title(title, fontsize=8)
    axis.set_xticks([])
    axis.set_yticks([])
    return shown


def draw_token_maps(image: np.ndarray, panels, aggregation_name: str, smooth: bool = False) -> bytes:
    """One heat map per (label, (N,) map) panel, e.g. one per answer token plus the answer's mean.

    Panel titles give the map's total (the share of attention on the image positions).
    """
    count = len(panels)
    figure = Figure(figsize=(3.2 * count, 3.8), layout="constrained")
    for index, (label, weights) in enumerate(panels):
        axis = figure.add_subplot(1, count, index + 1)
        shown = overlay(axis, image, weights, f"{label}\nimage attention {float(np.sum(weights)):.3f}", smooth)
        figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
    figure.suptitle(f"attention to the image ({aggregation_name}); white box: hottest patch; "
                    "colours span each panel's range", fontsize=9)
    return figure_png(figure)


def draw_head_grid(image: np.ndarray, per_head: np.ndarray, layer: int, token_label: str,
                   smooth: bool = False) -> bytes:
    """(H, N) maps of one layer's heads, each on its own colour scale."""
    heads = per_head.shape[0]
    columns = min(8, heads)
    rows = -(-heads // columns)
    figure = Figure(figsize=(1.9 * columns, 2.1 * rows + 0.4), layout="constrained")
    for head in range(heads):
        axis = figure.add_subplot(rows, columns, head + 1)
        overlay(axis, image, per_head[head], f"head {head}: {float(per_head[head].sum()):.2f}", smooth,
                mark_hottest=False)
    figure.suptitle(f"layer {layer}, every head (token {token_label}); title: the head's image share", fontsize=9)
    return figure_png(figure)


def draw_region_shares(shares: np.ndarray, region_names, title: str) -> bytes:
    """(L, R) region shares per layer as stacked bars; the image share (visual attention ratio) on top as a line."""
    layers = np.arange(shares.shape[0])
    figure = Figure(figsize=(7.5, 3.6), layout="constrained")
    axis = figure.add_subplot(1, 1, 1)
    bottom = np.zeros(shares.shape[0])
    for index, name in enumerate(region_names):
        axis.bar(layers, shares[:, index], bottom=bottom, color=REGION_COLOURS.get(name), label=name, width=0.85)
        bottom += shares[:, index]
    image = list(region_names).index("image")
    axis.plot(layers, shares[:, image], color="black", marker="o", markersize=3, linewidth=1,
              label="visual attention ratio")
    axis.set_xlabel("layer")
    axis.set_ylabel("share of attention")
    axis.set_ylim(0, 1.0)
    axis.set_xlim(-0.6, shares.shape[0] - 0.4)
    axis.set_xticks(layers[:: max(1, shares.shape[0] // 16)])
    axis.legend(fontsize=7, ncol=6, loc="lower center", bbox_to_anchor=(0.5, 1.08))
    axis.set_title(title, fontsize=9)
    return figure_png(figure)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    caption = html.escape(alt)
    return (f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _cell(value) -> str:
    """A table cell's HTML: floats to 4 significant digits, everything escaped.

    >>> _cell(0.123456789), _cell([1.0, 2.5]), _cell("a<b")
    ('0.1235', '[1.0, 2.5]', 'a&lt;b')
    """
    return html.escape(f"{value:.4g}" if isinstance(value, float) else str(value))


def _table(rows) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_cell(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


PAGE_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
.row { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
figure { margin: 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.8em; color: #666; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td { white-space: pre-wrap; } .answer { font-size: 1.3em; }
"""


def question_page(record: dict, figures: dict[str, bytes], samples: list[str] | None = None,
                  scores: dict | None = None) -> str:
    """One self-contained HTML page: the figures side by side with the answer, statistics, samples and scores.

    record: the question's table row (question_id, question, answer, tokens, statistics);
    figures: caption -> PNG bytes.
    """
    title = f"question {record['question_id']}"
    tokens = "".join(f"<tr><td>{html.escape(repr(text))}</td><td>{token_id}</td><td>{logprob:.4f}</td></tr>"
                     for text, token_id, logprob in zip(record["answer_tokens"], record["answer_token_ids"],
                                                        record["answer_token_logprobs"]))
    stats = [(key, record[key]) for key in ("aggregation", "image_share", "bos_share", "system_share", "question_share",
                                            "answer_share", "map_entropy", "map_entropy_normalized", "hottest_row",
                                            "hottest_col", "hottest_box", "hottest_share", "padding_share")
             if key in record]
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{PAGE_STYLE}</style></head><body>",
        f"<h2>{html.escape(title)}</h2>",
        _table([("image", f"{record.get('image', '')} ({record['width']} x {record['height']})"),
                ("category", record.get("category")), ("question", record["question"])]),
        f"<p class='answer'>greedy answer: <b>{html.escape(record['answer'])}</b></p>",
        f"<div class='row'>{''.join(_img(png, caption) for caption, png in figures.items())}</div>",
        "<div class='row'><div><h3>answer tokens</h3><table><tr><th>token</th><th>id</th><th>log-prob</th></tr>",
        tokens, "</table></div>",
        f"<div><h3>attention statistics</h3>{_table(stats)}</div>",
    ]
    if scores:
        parts.append(f"<div><h3>uncertainty scores</h3>{_table(sorted(scores.items()))}</div>")
    parts.append("</div>")
    if samples:
        items = "".join(f"<li>{html.escape(text)}</li>" for text in samples)
        parts.append(f"<h3>samples ({len(samples)})</h3><ol>{items}</ol>")
    parts.append(f"<details><summary>table row (JSON)</summary><pre>{html.escape(json.dumps(record, indent=1))}</pre>"
                 "</details></body></html>")
    return "".join(parts)


def index_page(entries) -> str:
    """A plain index linking the question pages: entries of (href, question_id, question, answer)."""
    rows = "".join(f"<tr><td><a href='{html.escape(href)}'>{html.escape(str(qid))}</a></td><td>{html.escape(q)}</td>"
                   f"<td>{html.escape(a)}</td></tr>" for href, qid, q, a in entries)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>attention pages</title><style>{PAGE_STYLE}"
            f"</style></head><body><table><tr><th>question_id</th><th>question</th><th>answer</th></tr>{rows}"
            "</table></body></html>")
