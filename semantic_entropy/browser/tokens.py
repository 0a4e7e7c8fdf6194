"""Token ids as the tokenizer's pieces, for the greedy answer's per-token log-probs.

Generations records keep token ids only. The model folder's tokenizer (the same
`AutoTokenizer.from_pretrained(model_path)` the answer scripts load) names them when it is
readable on the machine building the page; without it the page shows '#id'.
"""

from __future__ import annotations

import os

from semantic_entropy.browser.questions import TokenText


def token_namer(tokenizer_dir: str | None) -> TokenText | None:
    """ids -> token pieces with the tokenizer of `tokenizer_dir`; None when it is absent or unreadable."""
    if not tokenizer_dir or not os.path.isdir(tokenizer_dir):
        return None
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    except (OSError, ValueError, ImportError, KeyError):
        return None
    pieces: dict[int, str] = {}

    def names(ids) -> list[str]:
        for token_id in ids:
            if token_id not in pieces:
                piece = tokenizer.convert_ids_to_tokens(int(token_id))
                pieces[token_id] = piece if isinstance(piece, str) else f"#{token_id}"
        return [pieces[token_id] for token_id in ids]

    return names
