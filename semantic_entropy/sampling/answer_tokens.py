"""Token ids of the yes/no answer variants, read from the tokenizer's vocabulary."""

from __future__ import annotations

WORD_BOUNDARY_MARKS = ("▁", "Ġ")  # SentencePiece and byte-level BPE word starts


def piece_word(piece: str) -> str:
    """The lower-cased word of a vocabulary piece without its word-boundary mark.

    >>> piece_word("▁Yes"), piece_word("NO"), piece_word("Ġyes")
    ('yes', 'no', 'yes')
    """
    for mark in WORD_BOUNDARY_MARKS:
        piece = piece.replace(mark, "")
    return piece.strip().lower()


def yes_no_token_ids(tokenizer, vocab_limit: int | None = None) -> tuple[list[int], list[int]]:
    """Ids of every piece that spells yes / no (any case, with or without the word mark).

    With the Llama-2 tokenizer these include 3869 "▁Yes", 4874 "▁yes", 1939 "▁No", 694 "▁no".
    Ids >= `vocab_limit` (llava-hf's extra rows) are left out.
    """
    yes, no = [], []
    for piece, token_id in tokenizer.get_vocab().items():
        if vocab_limit is not None and token_id >= vocab_limit:
            continue
        word = piece_word(piece)
        if word == "yes":
            yes.append(token_id)
        elif word == "no":
            no.append(token_id)
    if not yes or not no:
        raise ValueError("the tokenizer has no yes/no pieces; the first-token yes/no mass is undefined")
    return sorted(yes), sorted(no)
