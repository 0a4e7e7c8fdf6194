"""Small helpers shared by the scripts: answer ids and run manifests."""

from __future__ import annotations

import platform
import sys
import uuid
from datetime import datetime, timezone

from llava.jsonl_io import write_json_atomic

# shortuuid's alphabet: digits and letters without the look-alikes 0, 1, I, O, l.
SHORTUUID_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def short_uuid() -> str:
    """A random 22-character id in the format of `shortuuid.uuid()` (what LLaVA writes as answer_id)."""
    number = uuid.uuid4().int
    digits = []
    while number:
        number, rest = divmod(number, len(SHORTUUID_ALPHABET))
        digits.append(SHORTUUID_ALPHABET[rest])
    return "".join(reversed(digits)).rjust(22, SHORTUUID_ALPHABET[0])


def package_versions() -> dict:
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in ("torch", "transformers", "numpy", "tokenizers", "PIL"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # a missing optional package is just not listed
            pass
    return versions


def write_manifest(path: str, settings: dict, **extra) -> None:
    """The run's resolved settings, package versions and time, so a table traces back to its run."""
    manifest = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "settings": settings,
        "versions": package_versions(),
        **extra,
    }
    write_json_atomic(path, manifest)
