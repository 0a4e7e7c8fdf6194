"""Names of the attention tool's outputs, for the tool and for its readers (the results page).

Kept apart from `question_outputs` so that a reader needs neither torch nor the model code.
"""

from __future__ import annotations

import os
import re

STATS_FILE = "attention_stats.jsonl"


def safe_name(question_id) -> str:
    """File-name form of a question_id.

    >>> safe_name(10000001), safe_name("a/b c")
    ('10000001', 'a_b_c')
    """
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(question_id))


def map_file(out_dir: str, question_id) -> str:
    """maps/q<ID>.npz: a question's saved maps (--save-maps).

    >>> map_file("att", 7)
    'att/maps/q7.npz'
    """
    return os.path.join(out_dir, "maps", f"q{safe_name(question_id)}.npz")
