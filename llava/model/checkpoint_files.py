"""Finding and reading the weight files of a checkpoint folder (safetensors or .bin shards)."""

from __future__ import annotations

import json
import os

import torch

WEIGHT_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SINGLE_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message names the file and key."""


def weight_map(folder: str, extra_files: tuple[str, ...] = ()) -> dict[str, str]:
    """Map every weight key of `folder` to the file that holds it.

    Reads a shard index when there is one (every listed shard must exist), else the single
    weight file; `extra_files` (e.g. `mm_projector.bin`) are added when present.
    """
    mapping: dict[str, str] = {}
    for index_name in WEIGHT_INDEX_FILES:
        index_path = os.path.join(folder, index_name)
        if os.path.exists(index_path):
            with open(index_path, encoding="utf-8") as f:
                try:
                    index = json.load(f)
                except json.JSONDecodeError as e:
                    raise CheckpointError(f"{index_path}: not valid JSON ({e})") from None
            for key, shard in index.get("weight_map", {}).items():
                shard_path = os.path.join(folder, shard)
                if not os.path.exists(shard_path):
                    raise CheckpointError(f"{index_path} lists shard {shard} (holding {key!r}), but {shard_path} is missing")
                mapping[key] = shard_path
            break
    else:
        for name in SINGLE_WEIGHT_FILES:
            path = os.path.join(folder, name)
            if os.path.exists(path):
                mapping.update({key: path for key in list_keys(path)})
                break
    for name in extra_files:
        path = os.path.join(folder, name)
        if os.path.exists(path):
            mapping.update({key: path for key in list_keys(path)})
    if not mapping:
        raise CheckpointError(
            f"no weights found in {folder}: expected one of {WEIGHT_INDEX_FILES + SINGLE_WEIGHT_FILES + extra_files}"
        )
    return mapping


def list_keys(path: str) -> list[str]:
    if path.endswith(".safetensors"):
        with open_safetensors(path) as f:
            return list(f.keys())
    return list(load_bin(path).keys())


def open_safetensors(path: str):
    """A safe_open handle; a truncated or corrupt file is a CheckpointError that names it
    (safetensors' own message does not)."""
    from safetensors import safe_open

    try:
        return safe_open(path, framework="pt")
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read safetensors file ({e})") from None


def load_bin(path: str) -> dict[str, torch.Tensor]:
    """A .bin state dict, loaded with weights_only=True: never unpickles arbitrary objects."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # a truncated or non-tensor pickle
        raise CheckpointError(f"{path}: cannot read weights file ({e})") from None


class TensorReader:
    """Reads tensors by key from a weight map, opening each file once."""

    def __init__(self, mapping: dict[str, str]):
        self.mapping = mapping
        self._open: dict[str, object] = {}

    def _handle(self, path: str):
        if path not in self._open:
            self._open[path] = open_safetensors(path) if path.endswith(".safetensors") else load_bin(path)
        return self._open[path]

    def open_all(self) -> None:
        """Open every file now, so that an unreadable one is named before another loader reads it."""
        for path in sorted(set(self.mapping.values())):
            self._handle(path)

    def get(self, key: str) -> torch.Tensor:
        path = self.mapping[key]
        handle = self._handle(path)
        if not path.endswith(".safetensors"):
            return handle[key]
        try:
            return handle.get_tensor(key)
        except Exception as e:  # safetensors' own errors name no file
            raise CheckpointError(f"{path}: cannot read {key!r} ({e})") from None
