"""JSON-lines reading and crash-safe appending, shared by every stage.

Reading names the file and line of any malformed record. Appending writes whole lines only:
a run killed mid-write leaves at most a partial last line, which `completed_ids` and
`JsonlAppender` cut off (keeping every complete record) before new records are appended.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator


class JsonlError(ValueError):
    """A malformed or inconsistent JSON-lines file; the message names file and line or id."""


def iter_jsonl(path: str) -> Iterator[tuple[int, dict]]:
    """Yield (line_number, record) for every non-blank line; errors name file and line."""
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise JsonlError(f"{path}:{line_number}: not valid JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise JsonlError(f"{path}:{line_number}: expected a JSON object, got {type(record).__name__}")
            yield line_number, record


def read_jsonl(path: str) -> list[dict]:
    return [record for _, record in iter_jsonl(path)]


def read_keyed_jsonl(path: str, key: str = "question_id", required: Iterable[str] = ()) -> dict:
    """Records of `path` keyed by `key`, in file order; a missing field or duplicate key is an error."""
    records: dict = {}
    first_line: dict = {}
    required = tuple(required)
    for line_number, record in iter_jsonl(path):
        for field in (key, *required):
            if field not in record:
                raise JsonlError(f"{path}:{line_number}: missing field {field!r}")
        value = record[key]
        if value in records:
            raise JsonlError(
                f"{path}:{line_number}: duplicate {key} {value!r} (first on line {first_line[value]})"
            )
        records[value] = record
        first_line[value] = line_number
    return records


def _truncate_partial_last_line(path: str) -> None:
    """Cut a trailing line without newline (a write interrupted by a crash), keep the rest."""
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        # Scan back for the last newline; everything after it is the partial record.
        position = size - 1
        chunk = 4096
        while position > 0:
            start = max(0, position - chunk)
            f.seek(start)
            data = f.read(position - start)
            index = data.rfind(b"\n")
            if index >= 0:
                f.truncate(start + index + 1)
                return
            position = start
        f.truncate(0)


def completed_ids(path: str, key: str = "question_id") -> set:
    """Ids already written to `path` (after cutting a partial last line); empty if absent."""
    if not os.path.exists(path):
        return set()
    _truncate_partial_last_line(path)
    done = set()
    for line_number, record in iter_jsonl(path):
        if key not in record:
            raise JsonlError(f"{path}:{line_number}: missing field {key!r}")
        if record[key] in done:
            raise JsonlError(f"{path}:{line_number}: duplicate {key} {record[key]!r}")
        done.add(record[key])
    return done


class JsonlAppender:
    """Appends one whole record per line and flushes it, so a crash never loses finished work."""

    def __init__(self, path: str, fsync: bool = False):
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        if os.path.exists(path):
            _truncate_partial_last_line(path)
        self.path = path
        self._fsync = fsync
        self._file = open(path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        # Serialize first: a record that fails to serialize writes nothing.
        line = json.dumps(record, ensure_ascii=False) + "\n"
        self._file.write(line)
        self._file.flush()
        if self._fsync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_json_atomic(path: str, obj) -> None:
    """Write JSON to `path` via a temporary file and rename, so readers never see half a file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)
