"""A resumable file of JSON records keyed by question_id: every tool that writes records uses it.

    outputs = [RecordOutput(path, spec, info) for path in (answers_file, generations_file)]
    with open_outputs(outputs, info):         # lock, settings check, leftovers folded: before any model loads
        ... load the model, skip outputs[i].done ...
        with outputs[0].appender() as out:     # this rank's file: the output itself, or its torchrun part
            out.write(record)
        finish_outputs(outputs, info, order)   # parts merged, question order, manifest "complete"

What opening does, on rank 0, in this order:
1. takes `<output>.lock` (a second writer is refused at once; a dead one's lock is taken over);
2. compares the output's manifest with this run's (`RunSpec`): any difference in a setting or
   in an input file's content refuses the resume, naming each difference and both values; an
   output that has records but no manifest is refused too, since its settings are unknown;
3. cuts a line a crash left half-written, folds torchrun part files a crashed run left behind;
4. writes the manifest with status "running".
Every rank then reads the ids already done. Errors on rank 0 reach every rank, so a refused
torchrun run stops everywhere with the same one-line message.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from llava.jsonl_io import JsonlAppender, completed_ids
from semantic_entropy.runs import distributed
from semantic_entropy.runs.lock import OutputLock
from semantic_entropy.runs.manifest import (describe_inputs, manifest_path, new_manifest, read_manifest,
                                            settings_differences, write_manifest)


class ResumeRefused(ValueError):
    """An output exists with other settings (or unknown ones); the message names the differences."""


@dataclass(frozen=True)
class RunSpec:
    """What a run promises about its records.

    settings:  everything that changes the records (checked on resume)
    inputs:    name -> file path whose content the records depend on (checked by sha256)
    execution: how it runs without changing the records (device, batch size): recorded only
    """

    tool: str
    settings: dict
    inputs: dict = field(default_factory=dict)
    execution: dict = field(default_factory=dict)


class RecordOutput:
    """One output file of a run; see the module docstring for the life cycle."""

    def __init__(self, path: str, spec: RunSpec, info: distributed.RankInfo = distributed.SINGLE_PROCESS,
                 key: str = "question_id"):
        self.path = os.path.expanduser(path)
        self.spec = spec
        self.info = info
        self.key = key
        self.done: set = set()
        self.manifest: dict | None = None
        self._lock = OutputLock(self.path)

    # -- rank 0 ----------------------------------------------------------------------------

    def claim(self, described_inputs: dict) -> None:
        """Lock, check the settings against the existing output, fold leftovers, write the manifest."""
        self._lock.acquire()
        if self._lock.taken_over:
            print(f"note: taking over the lock of a run that ended without releasing it ({self._lock.taken_over})")
        current = new_manifest(self.spec.tool, self.path, self.spec.settings, described_inputs, self.spec.execution)
        has_records = bool(completed_ids(self.path, self.key)) or bool(distributed.leftover_parts(self.path))
        previous = read_manifest(manifest_path(self.path))
        if has_records and previous is None:
            raise ResumeRefused(f"{self.path} has records but no manifest ({manifest_path(self.path)}), so the "
                                "settings it was written with are unknown; use another output or delete it")
        if has_records:
            differences = settings_differences(previous, current)
            if differences:
                raise ResumeRefused(f"{self.path} was written with other settings: {'; '.join(differences)}. "
                                    "Use another output, or delete it to start over")
            current["created"] = previous.get("created", current["created"])
        parts = distributed.leftover_parts(self.path)
        if parts:  # a crashed torchrun run: keep its finished records
            distributed.merge_parts_into(self.path, parts, order=None, key=self.key)
        self.manifest = current
        write_manifest(manifest_path(self.path), current)

    def release(self) -> None:
        self._lock.release()

    # -- every rank ------------------------------------------------------------------------

    def load_done(self) -> set:
        self.done = completed_ids(self.path, self.key) if os.path.exists(self.path) else set()
        return self.done

    def part_path(self) -> str:
        return distributed.part_path(self.path, self.info)

    def appender(self) -> JsonlAppender:
        return JsonlAppender(self.part_path())

    def finish(self, order: dict | None, details: dict | None = None) -> int:
        """Rank 0: merge the parts, put records in `order`, mark the manifest complete; returns the count."""
        distributed.merge_parts_into(self.path, distributed.leftover_parts(self.path), order, key=self.key)
        count = len(completed_ids(self.path, self.key)) if os.path.exists(self.path) else 0
        if self.manifest is not None:
            self.manifest.update(status="complete", records=count)
            if details:
                self.manifest["details"] = {**self.manifest.get("details", {}), **details}
            write_manifest(manifest_path(self.path), self.manifest)
        return count

    def record_details(self, details: dict) -> None:
        """Facts learnt after the model loaded (token ids, templates), kept in the manifest."""
        if self.manifest is not None:
            self.manifest["details"] = {**self.manifest.get("details", {}), **details}
            write_manifest(manifest_path(self.path), self.manifest)


def _claim_all(outputs: Sequence[RecordOutput]) -> None:
    described = describe_inputs(outputs[0].spec.inputs) if outputs else {}
    claimed = []
    try:
        for output in outputs:
            output.claim(described if output.spec.inputs == outputs[0].spec.inputs
                         else describe_inputs(output.spec.inputs))
            claimed.append(output)
    except BaseException:
        for output in claimed:
            output.release()
        raise


@contextmanager
def open_outputs(outputs: Sequence[RecordOutput], info: distributed.RankInfo = distributed.SINGLE_PROCESS):
    """Claim every output on rank 0 (errors shared with all ranks), then load the done ids everywhere."""
    try:
        if info.is_main:
            distributed.share_outcome(info, lambda: _claim_all(outputs))
        else:
            distributed.share_outcome(info, None)
        for output in outputs:
            output.load_done()
        yield outputs
    finally:
        if info.is_main:
            for output in outputs:
                output.release()


def finish_outputs(outputs: Sequence[RecordOutput], info: distributed.RankInfo, order: dict | None,
                   details: dict | None = None) -> list[int]:
    """After every rank has written: rank 0 merges and completes each output; returns record counts."""
    distributed.barrier(info)
    counts = [output.finish(order, details) for output in outputs] if info.is_main else []
    distributed.barrier(info)
    return counts
