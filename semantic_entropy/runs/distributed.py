"""Several processes over one question file (torchrun), with outputs identical to one process.

Each rank answers its share of the pending work into its own part files
(`<file>.rank<r>-of<w>.part`); rank 0 then merges the parts into the main files in question
order. A resumed run first folds any leftover parts into the main files, so only what is
missing is computed again. Per-question seeds make the shares' samples independent of how the
work is split.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass

import torch

from llava.jsonl_io import JsonlError, completed_ids, iter_jsonl


@dataclass(frozen=True)
class RankInfo:
    rank: int
    world_size: int
    device: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE_PROCESS = RankInfo(0, 1, "auto")


def setup(device: str) -> RankInfo:
    """Join the torchrun process group when WORLD_SIZE > 1; pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return RankInfo(0, 1, device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
    return RankInfo(rank, world_size, device)


def barrier(info: RankInfo) -> None:
    if info.world_size > 1:
        torch.distributed.barrier()


def share_outcome(info: RankInfo, step) -> None:
    """Run `step` on rank 0 and raise its error (same type, same message) on every rank.

    Without this a refused torchrun run would stop rank 0 and leave the others waiting at a
    barrier. Other ranks pass `step=None`.
    """
    error = None
    if info.is_main:
        try:
            step()
        except Exception as e:  # re-raised below, on every rank
            error = e
    if info.world_size > 1:
        shared = [None if error is None else (type(error), str(error))]
        torch.distributed.broadcast_object_list(shared, src=0)
        if shared[0] is not None and error is None:
            error_type, message = shared[0]
            error = error_type(message) if issubclass(error_type, Exception) else RuntimeError(message)
    if error is not None:
        raise error


def teardown(info: RankInfo) -> None:
    if info.world_size > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def part_path(path: str, info: RankInfo) -> str:
    return path if info.world_size == 1 else f"{path}.rank{info.rank}-of{info.world_size}.part"


def leftover_parts(path: str) -> list[str]:
    return sorted(glob.glob(glob.escape(path) + ".rank*-of*.part"))


def shard(units: list, info: RankInfo) -> list:
    """This rank's units, round-robin (unit i goes to rank i mod world size)."""
    return units[info.rank :: info.world_size]


def merge_parts_into(path: str, parts: list[str], order: dict | None, key: str = "question_id") -> None:
    """Append the parts' records to `path` (no id twice), rewrite it in `order` if given, delete the parts."""
    seen = {qid: path for qid in completed_ids(path, key)}
    records = []
    for part in parts:
        completed_ids(part, key)  # cuts a line a crash left half-written
        for line_number, record in iter_jsonl(part):
            qid = record[key]
            if qid in seen:
                raise JsonlError(f"{part}:{line_number}: question_id {qid!r} is also in {seen[qid]}")
            seen[qid] = part
            records.append(record)
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if order is not None and os.path.exists(path):
        write_in_order(path, [r for _, r in iter_jsonl(path)], order, key)
    for part in parts:
        os.remove(part)


def write_in_order(path: str, records: list[dict], order: dict, key: str = "question_id") -> None:
    """Rewrite `path` with `records` sorted by question-file rank (atomically), if not already so."""
    ranks = [order.get(r[key], len(order)) for r in records]
    if ranks == sorted(ranks) and os.path.exists(path):
        return
    ordered = [r for _, r in sorted(zip(ranks, records), key=lambda pair: pair[0])]
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in ordered)
    os.replace(tmp, path)
