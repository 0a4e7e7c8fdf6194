"""The one manifest format of every output the tools write, and the resume check built on it.

A manifest sits beside its output as `<output>.manifest.json` (a folder's as `manifest.json`
inside it)::

    {"format": 1,
     "tool": "semantic_entropy.model_vqa_loader",
     "output": "/abs/generations.jsonl",
     "settings": {...},            # everything that changes the records: checked on resume
     "inputs": {"question_file": {"path": "/abs/q.jsonl", "sha256": "..."}},   # checked by hash
     "execution": {...},           # how it ran (device, batch size, processes): recorded only
     "details": {...},             # facts learnt while running (token ids, templates): recorded only
     "status": "running" | "complete", "records": 1794,
     "command": [...], "versions": {...}, "created": "...", "updated": "..."}

`settings_differences` compares a stored manifest with a new run's; a resume is refused when
the list is not empty.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata

from llava.jsonl_io import write_json_atomic

MANIFEST_FORMAT = 1
MANIFEST_SUFFIX = ".manifest.json"


def manifest_path(output: str) -> str:
    """Where an output's manifest lives.

    >>> manifest_path("runs/x/generations.jsonl")
    'runs/x/generations.jsonl.manifest.json'
    """
    return output + MANIFEST_SUFFIX


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_inputs(inputs: dict[str, str | None]) -> dict:
    """name -> {"path", "sha256"} for each input file given (None: not used by this run)."""
    described = {}
    for name, path in inputs.items():
        if path is None:
            continue
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{name.replace('_', ' ')} {path} does not exist")
        described[name] = {"path": os.path.abspath(path), "sha256": file_sha256(path)}
    return described


def package_versions() -> dict:
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("llava-uncertainty", "torch", "transformers", "tokenizers", "numpy", "scikit-learn",
                    "lm-polygraph"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass  # an optional package that is not installed is just not listed
    versions["git_commit"] = git_commit()
    return versions


def git_commit() -> str | None:
    """The checkout's commit when the code runs from a git checkout, else None."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=os.path.dirname(os.path.abspath(__file__)),
                              capture_output=True, text=True, timeout=10, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_manifest(tool: str, output: str, settings: dict, inputs: dict, execution: dict | None = None,
                 details: dict | None = None) -> dict:
    """A manifest for a run starting now; `inputs` as returned by `describe_inputs`."""
    stamp = now()
    return {
        "format": MANIFEST_FORMAT,
        "tool": tool,
        "output": os.path.abspath(output),
        "settings": settings,
        "inputs": inputs,
        "execution": execution or {},
        "details": details or {},
        "status": "running",
        "records": None,
        "command": list(sys.argv),
        "versions": package_versions(),
        "created": stamp,
        "updated": stamp,
    }


def read_manifest(path: str) -> dict | None:
    """The manifest at `path`, None when absent; an unreadable one is an error naming it."""
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg}); delete it together with its output") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: not a manifest object")
    return manifest


def write_manifest(path: str, manifest: dict) -> None:
    write_json_atomic(path, {**manifest, "updated": now()})


def _short(value) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def settings_differences(previous: dict, current: dict) -> list[str]:
    """'name: old -> new' for every checked setting or input that differs, tool first.

    >>> old = {"format": 1, "tool": "t", "settings": {"num_samples": 5, "conv_mode": "vicuna_v1"},
    ...        "inputs": {"question_file": {"path": "/q", "sha256": "aa"}}}
    >>> new = {"format": 1, "tool": "t", "settings": {"num_samples": 10, "conv_mode": "vicuna_v1"},
    ...        "inputs": {"question_file": {"path": "/q", "sha256": "bb"}}}
    >>> settings_differences(old, new)
    ['num_samples: 5 -> 10', 'question_file: content changed (sha256 aa... -> bb...)']
    >>> settings_differences(new, new)
    []
    """
    if previous.get("format") != MANIFEST_FORMAT:
        return [f"manifest format: {previous.get('format')!r} -> {MANIFEST_FORMAT} (written by an older version)"]
    differences = []
    if previous.get("tool") != current.get("tool"):
        differences.append(f"tool: {previous.get('tool')} -> {current.get('tool')}")
    old_settings, new_settings = previous.get("settings", {}), current.get("settings", {})
    for name in list(old_settings) + [k for k in new_settings if k not in old_settings]:
        old, new = old_settings.get(name, "<unset>"), new_settings.get(name, "<unset>")
        if old != new:
            differences.append(f"{name}: {_short(old)} -> {_short(new)}")
    old_inputs, new_inputs = previous.get("inputs", {}), current.get("inputs", {})
    for name in list(old_inputs) + [k for k in new_inputs if k not in old_inputs]:
        old, new = old_inputs.get(name), new_inputs.get(name)
        if old is None or new is None:
            differences.append(f"{name}: {_short(old and old['path'])} -> {_short(new and new['path'])}")
        elif old["sha256"] != new["sha256"]:
            differences.append(f"{name}: content changed (sha256 {old['sha256'][:12]}... -> {new['sha256'][:12]}...)")
    return differences
