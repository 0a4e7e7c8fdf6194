"""The questions' images for the page: small embedded JPEG thumbnails, or links relative to the page.

Each image also carries LLaVA's padded-square geometry (`attention.geometry.padded_square`:
side S and the original's offset (dx, dy) in it), which the page needs to lay the 24 x 24
patch grid of an attention map over the original image with the padding marked.
"""

from __future__ import annotations

import base64
import io
import os
import urllib.parse

from PIL import Image, UnidentifiedImageError

from semantic_entropy.attention.geometry import padded_square

JPEG_QUALITY = 85


def thumbnail_uri(image: Image.Image, max_side: int) -> str:
    """A data: URI of the image shrunk to at most `max_side` pixels a side, as JPEG.

    >>> thumbnail_uri(Image.new("RGB", (640, 480), (200, 10, 10)), 64)[:23]
    'data:image/jpeg;base64,'
    """
    small = image.convert("RGB")
    small.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def relative_link(path: str, page_dir: str) -> str:
    """A URL to `path` relative to the page's folder.

    >>> relative_link("/data/coco/val 2014/a.jpg", "/runs/x")
    '../../data/coco/val%202014/a.jpg'
    """
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(page_dir))
    return urllib.parse.quote(relative.replace(os.sep, "/"))


def geometry(width: int, height: int) -> dict:
    """The image's size and its place in LLaVA's padded square.

    >>> geometry(300, 200)
    {'width': 300, 'height': 200, 'side': 300, 'dx': 0, 'dy': 50}
    """
    side, dx, dy = padded_square(width, height)
    return {"width": width, "height": height, "side": side, "dx": dx, "dy": dy}


def image_entries(names, folder: str | None, max_side: int, link_from: str | None = None) -> tuple[dict, list[str]]:
    """name -> {src, width, height, side, dx, dy} for every readable image, and the names not found.

    `link_from` (the page's folder) links the files instead of embedding thumbnails. Images are
    only decoded (never executed); an unreadable file counts as not found.
    """
    entries, missing = {}, []
    for name in dict.fromkeys(names):
        path = os.path.join(folder, name) if folder else None
        if path is None or not os.path.isfile(path):
            missing.append(name)
            continue
        try:
            with Image.open(path) as image:
                width, height = image.size
                if link_from is not None:
                    src = relative_link(path, link_from)
                else:
                    image.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale, much faster
                    src = thumbnail_uri(image, max_side)
        except (OSError, UnidentifiedImageError):
            missing.append(name)
            continue
        entries[name] = {"src": src, **geometry(width, height)}
    return entries, missing
