"""Which files of a run folder the results browser reads.

`scripts/pope_se.sh` (and `scripts/method_study.sh`) write one folder per setting:

    <run dir>/answers.jsonl, generations.jsonl, uncertainty_<judge>.jsonl (+ .manifest.json each)
    <run dir>/eval_<judge>/metrics.json, per_question.csv, manifest.json

Stage 3 run without labels (an open-ended question file) writes distributions.json in place
of metrics.json, and a per_question.csv of ids, splits and scores alone; its manifest's
`settings.mode` says which kind of evaluation the folder holds.

The evaluation folder is the anchor: its manifest names the uncertainty files it scored, and
an uncertainty file's manifest names the generations file it read. Paths in manifests are
absolute, so a run folder copied elsewhere is read from its own copies first (same file
name inside the run folder), then from the recorded path. Anything missing is a ValueError
naming the file.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

from semantic_entropy.runs.manifest import manifest_path, read_manifest

EVAL_PREFIX = "eval_"
UNCERTAINTY_PREFIX = "uncertainty_"
LABELS = "labels"  # stage 3's modes (its manifest's settings.mode)
DISTRIBUTIONS = "distributions"


@dataclass(frozen=True)
class RunFiles:
    run_dir: str
    eval_dir: str
    mode: str  # LABELS or DISTRIBUTIONS
    summary: str  # eval_dir/metrics.json with labels, eval_dir/distributions.json without
    per_question: str  # eval_dir/per_question.csv
    uncertainty: list[tuple[str, str]]  # (column label, path) per scored uncertainty file, in eval order
    generations: str
    manifests: list[str]  # every manifest of the run, for provenance


def require_file(path: str, what: str) -> str:
    if not os.path.isfile(path):
        raise ValueError(f"missing {what}: {path}")
    return path


def find_eval_dir(run_dir: str, eval_dir: str | None = None) -> str:
    """The evaluation folder: `eval_dir` when given, else the run folder's only eval_<judge>/."""
    if eval_dir is not None:
        if not os.path.isdir(eval_dir):
            raise ValueError(f"missing evaluation folder: {eval_dir}")
        return eval_dir
    found = sorted(name for name in os.listdir(run_dir)
                   if name.startswith(EVAL_PREFIX) and os.path.isdir(os.path.join(run_dir, name)))
    if not found:
        raise ValueError(f"missing evaluation folder: {os.path.join(run_dir, EVAL_PREFIX + '<judge>')} "
                         "(stage 3, semantic_entropy.eval_auroc --output-dir)")
    if len(found) > 1:
        raise ValueError(f"{run_dir} holds several evaluations ({', '.join(found)}): choose one with --eval-dir")
    return os.path.join(run_dir, found[0])


def local_copy(recorded: str, run_dir: str) -> str:
    """The run folder's file of that name when present, else the recorded path.

    >>> local_copy("/elsewhere/x/answers.jsonl", "/nonexistent-run")
    '/elsewhere/x/answers.jsonl'
    """
    here = os.path.join(run_dir, os.path.basename(recorded))
    return here if os.path.isfile(here) else recorded


def scored_uncertainty_files(eval_dir: str, run_dir: str) -> list[tuple[str, str]]:
    """(label, path) of each uncertainty file stage 3 scored, from its manifest, else by the folder's name."""
    manifest = read_manifest(os.path.join(eval_dir, "manifest.json"))
    if manifest is None:
        judge = os.path.basename(os.path.normpath(eval_dir))[len(EVAL_PREFIX):]
        path = os.path.join(run_dir, f"{UNCERTAINTY_PREFIX}{judge}.jsonl")
        return [(os.path.splitext(os.path.basename(path))[0], require_file(path, "uncertainty file (stage 2)"))]
    inputs = manifest.get("inputs", {})
    labels = manifest.get("settings", {}).get("labels") or []
    paths = [inputs[key]["path"] for key in sorted((k for k in inputs if k.startswith("uncertainty_file_")),
                                                   key=lambda k: int(k.rsplit("_", 1)[1]))]
    if not paths:
        raise ValueError(f"{os.path.join(eval_dir, 'manifest.json')} names no uncertainty file")
    if len(labels) != len(paths):
        labels = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    return [(label, require_file(local_copy(path, run_dir), "uncertainty file (stage 2)"))
            for label, path in zip(labels, paths)]


def generations_file(uncertainty: str, run_dir: str) -> str:
    """The generations file stage 2 read (its manifest's input), else the run folder's generations.jsonl."""
    manifest = read_manifest(manifest_path(uncertainty))
    recorded = (manifest or {}).get("inputs", {}).get("generations_file", {}).get("path")
    if recorded is not None:
        return require_file(local_copy(recorded, run_dir), "generations file (stage 1)")
    return require_file(os.path.join(run_dir, "generations.jsonl"), "generations file (stage 1)")


def run_manifests(run_dir: str, eval_dir: str) -> list[str]:
    """Every manifest of the run folder and of the evaluation folder."""
    found = sorted(glob.glob(os.path.join(glob.escape(run_dir), "*.manifest.json")))
    evaluation = os.path.join(eval_dir, "manifest.json")
    return found + ([evaluation] if os.path.isfile(evaluation) else [])


def evaluation_mode(eval_dir: str) -> str:
    """LABELS or DISTRIBUTIONS, as stage 3's manifest records it; LABELS when it records none."""
    manifest = read_manifest(os.path.join(eval_dir, "manifest.json")) or {}
    mode = manifest.get("settings", {}).get("mode", LABELS)
    if mode not in (LABELS, DISTRIBUTIONS):
        raise ValueError(f"{os.path.join(eval_dir, 'manifest.json')}: unknown evaluation mode {mode!r}")
    return mode


def summary_file(eval_dir: str, mode: str) -> str:
    if mode == DISTRIBUTIONS:
        return require_file(os.path.join(eval_dir, "distributions.json"), "score distributions (stage 3, no labels)")
    return require_file(os.path.join(eval_dir, "metrics.json"), "metrics (stage 3)")


def find_run_files(run_dir: str, eval_dir: str | None = None, generations: str | None = None) -> RunFiles:
    """Locate every file the page needs; `eval_dir` and `generations` override the discovery."""
    if not os.path.isdir(run_dir):
        raise ValueError(f"missing run folder: {run_dir}")
    eval_dir = find_eval_dir(run_dir, eval_dir)
    mode = evaluation_mode(eval_dir)
    summary = summary_file(eval_dir, mode)
    per_question = require_file(os.path.join(eval_dir, "per_question.csv"), "per-question table (stage 3)")
    uncertainty = scored_uncertainty_files(eval_dir, run_dir)
    if generations is not None:
        generations = require_file(generations, "generations file (stage 1)")
    else:
        generations = generations_file(uncertainty[0][1], run_dir)
    return RunFiles(
        run_dir=run_dir,
        eval_dir=eval_dir,
        mode=mode,
        summary=summary,
        per_question=per_question,
        uncertainty=uncertainty,
        generations=generations,
        manifests=run_manifests(run_dir, eval_dir),
    )
