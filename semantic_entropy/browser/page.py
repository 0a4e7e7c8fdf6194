"""The HTML file: the page skeleton with the stylesheet, the data and the script written inline.

The script and stylesheet are package files (`static/`) read at build time, so the page needs
no server and loads nothing from a network (its Content-Security-Policy forbids it). The data
goes into a `<script type="application/json">` block with every '<' written as \\u003c, so no
text in it (a question, an answer) can close the block or become markup; the script puts
strings into the page as text, never as HTML.
"""

from __future__ import annotations

import html
import json
import math
import re
from importlib import resources

PLACEHOLDER = re.compile(r"\{\{(TITLE|STYLE|DATA|SCRIPT)\}\}")


def static_text(name: str) -> str:
    return resources.files("semantic_entropy.browser").joinpath("static", name).read_text(encoding="utf-8")


def json_safe(value):
    """Non-finite floats become None (JSON has no NaN), recursively.

    >>> json_safe({"a": [1.0, float("nan")], "b": float("inf")})
    {'a': [1.0, None], 'b': None}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def embedded_json(data) -> str:
    """JSON that is safe inside a <script> element.

    >>> embedded_json({"q": "</script><b>x</b>"})
    '{"q":"\\\\u003c/script>\\\\u003cb>x\\\\u003c/b>"}'
    """
    text = json.dumps(json_safe(data), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c")


def render_page(data: dict, title: str) -> str:
    """The whole page as one string."""
    script, style = static_text("report.js"), static_text("report.css")
    for name, text in (("report.js", script), ("report.css", style)):
        if re.search(r"</(script|style)", text, re.IGNORECASE):
            raise RuntimeError(f"static/{name} contains a closing tag that would end its inline block")
    parts = {"TITLE": html.escape(title), "STYLE": style, "DATA": embedded_json(data), "SCRIPT": script}
    return PLACEHOLDER.sub(lambda match: parts[match.group(1)], static_text("report.html"))
