"""Small helpers shared by the scripts: answer ids and per-question seeds."""

from __future__ import annotations

import hashlib
import uuid

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


def hash_seed(base_seed: int, question_id) -> int:
    """A stable 63-bit seed for (base seed, question_id) (Python's hash() is salted per process).

    >>> hash_seed(0, 1) == hash_seed(0, 1) != hash_seed(1, 1)
    True
    >>> hash_seed(0, 1)
    3373202220108974583
    """
    digest = hashlib.sha256(f"{base_seed}:{question_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def resolve_device(device: str | None) -> str:
    """'auto' (or None) -> 'cuda' when available, else 'cpu'; anything else unchanged."""
    if device not in (None, "auto"):
        return device
    import torch  # here, so that tools without a model do not pay for importing torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def loader_workers(requested: int | None, device) -> int:
    """`--num-workers`: the number asked for, else 4 image loaders beside a GPU and none on the CPU
    (there the loaders would take cores from the model).

    >>> loader_workers(None, "cpu"), loader_workers(None, "cuda:1"), loader_workers(2, "cpu")
    (0, 4, 2)
    """
    if requested is not None:
        return requested
    return 4 if str(device).startswith("cuda") else 0
