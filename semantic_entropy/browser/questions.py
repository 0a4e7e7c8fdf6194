"""The page's question table and each question's details, joined by question_id.

Stage 3's per_question.csv gives the rows (split, image, label, parsed answer, correctness and
every score it evaluated, in its order); the generations file gives the question, the greedy
answer's tokens and the samples; each uncertainty file gives the samples' meaning clusters.
Without labels stage 3's table holds ids, splits and scores alone: the image and the greedy
answer then come from the generations file, and the rows carry no label, parsed answer or
correctness at all. Ids are compared as text, the form the CSV keeps.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence

from llava.jsonl_io import iter_jsonl
from semantic_entropy.sampling.generations_io import question_text
from semantic_entropy.scoring.measures import sequence_log_likelihood

# per_question.csv's columns before the scores: with labels (evaluation.tables.per_question_rows) and
# without (evaluation.distributions.per_question_scores).
FIXED_COLUMNS = ("question_id", "category", "image", "label", "prediction", "is_false", "answer")
UNLABELLED_COLUMNS = ("question_id", "category")
TokenText = Callable[[Sequence[int]], list[str]]


def finite(value: float | None, digits: int | None = None) -> float | None:
    """JSON-safe number: None for NaN or infinity, optionally rounded.

    >>> finite(float("nan")), finite(0.123456, 3), finite(2.0)
    (None, 0.123, 2.0)
    """
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits) if digits is not None else value


def parse_score(text: str) -> float | None:
    """A CSV cell as a score: '' and non-finite values are None.

    >>> parse_score("0.5"), parse_score(""), parse_score("nan")
    (0.5, None, None)
    """
    return finite(float(text)) if text.strip() else None


def read_per_question(path: str, fixed: Sequence[str] = FIXED_COLUMNS) -> tuple[list[dict], list[str]]:
    """The rows of per_question.csv and its score columns (those not in `fixed`), in file order."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in fixed if c not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; expected stage 3's per_question.csv")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{path}: no question rows")
    return rows, [c for c in header if c not in fixed]


def keyed_by_text_id(path: str, fields: Sequence[str]) -> dict[str, dict]:
    """question_id as text -> the record's `fields` (absent ones left out); repeated ids are an error."""
    records: dict[str, dict] = {}
    for line_number, record in iter_jsonl(path):
        key = str(record.get("question_id"))
        if key in records:
            raise ValueError(f"{path}:{line_number}: question_id {key} appears twice")
        records[key] = {field: record[field] for field in fields if field in record}
    return records


def require_ids(ids: Sequence[str], table: dict, path: str) -> None:
    missing = [qid for qid in ids if qid not in table]
    if missing:
        raise ValueError(f"{path} has no record for question_id(s) {missing[:10]}"
                         f"{' ...' if len(missing) > 10 else ''} ({len(missing)} of {len(ids)} missing)")


def answer_log_likelihood(answer: dict) -> float | None:
    """The answer's length-normalised log-likelihood (stage 2's convention), None without log-probs."""
    logprobs = answer.get("token_logprobs")
    if not logprobs:
        return None
    return finite(sequence_log_likelihood(logprobs, bool(answer.get("ends_with_eos"))), 4)


def greedy_detail(greedy: dict | None, token_text: TokenText | None) -> dict | None:
    """Text and per-token (token, log-prob) of the greedy answer; tokens as '#id' without a tokenizer."""
    if greedy is None:
        return None
    ids = greedy.get("token_ids") or []
    logprobs = greedy.get("token_logprobs") or [None] * len(ids)
    names = token_text(ids) if token_text is not None else [f"#{i}" for i in ids]
    return {"text": greedy.get("text", ""), "tokens": [[name, finite(lp, 4)] for name, lp in zip(names, logprobs)],
            "logLikelihood": answer_log_likelihood(greedy)}


def cluster_detail(label: str, record: dict) -> dict:
    probs = record.get("cluster_probs")
    return {"label": label, "ids": record.get("sample_cluster_ids") or [],
            "greedy": record.get("greedy_cluster_id"),
            "probs": None if probs is None else [finite(p, 6) for p in probs]}


def greedy_text(record: dict) -> str:
    return (record.get("greedy") or {}).get("text", "")


def labelled_columns(rows: Sequence[dict]) -> dict:
    """The table's columns that stage 3's labelled join gives: image, answer, label, parsed answer, correctness."""
    return {"image": [row["image"] for row in rows], "answer": [row["answer"] for row in rows],
            "label": [row["label"] for row in rows], "prediction": [row["prediction"] for row in rows],
            "wrong": [int(row["is_false"]) for row in rows]}


def unlabelled_columns(ids: Sequence[str], records: dict) -> dict:
    """Image and greedy answer from stage 1's records: a run without labels has nothing more to show."""
    return {"image": [records[qid].get("image", "") for qid in ids],
            "answer": [greedy_text(records[qid]) for qid in ids]}


def question_data(per_question: str, generations: str, uncertainty: Sequence[tuple[str, str]],
                  token_text: TokenText | None = None, labelled: bool = True) -> dict:
    """The table (columns of equal length, one entry per question) and each question's details.

    Without labels (`labelled` False) the rows hold no label, parsed answer or correctness.
    """
    rows, score_keys = read_per_question(per_question, FIXED_COLUMNS if labelled else UNLABELLED_COLUMNS)
    ids = [row["question_id"] for row in rows]
    records = keyed_by_text_id(generations, ("prompt", "greedy", "samples", "image"))
    require_ids(ids, records, generations)
    clusters = []
    for label, path in uncertainty:
        table = keyed_by_text_id(path, ("sample_cluster_ids", "greedy_cluster_id", "cluster_probs"))
        require_ids(ids, table, path)
        clusters.append((label, table))

    details = []
    for qid in ids:
        record = records[qid]
        details.append({
            "prompt": record.get("prompt", ""),
            "greedy": greedy_detail(record.get("greedy"), token_text),
            "samples": [[s.get("text", ""), answer_log_likelihood(s)] for s in record.get("samples") or []],
            "clusters": [cluster_detail(label, table[qid]) for label, table in clusters],
        })
    known = labelled_columns(rows) if labelled else unlabelled_columns(ids, records)
    table = {"id": ids, "split": [row["category"] for row in rows], "image": known.pop("image"),
             "question": [question_text(records[qid].get("prompt", "")) for qid in ids], **known,
             "scores": [[parse_score(row[key]) for row in rows] for key in score_keys]}
    return {"scoreKeys": score_keys, "rows": table, "details": details}
