"""Settings and provenance of a run, from its manifests (`semantic_entropy.runs.manifest`).

The headline picks the settings a reader asks about first (model, questions, sampling, judge,
evaluation, attention) from the manifest of the tool that owns each; every manifest is also
passed on whole for the page's full listing.
"""

from __future__ import annotations

import os

from semantic_entropy.browser.run_files import DISTRIBUTIONS, LABELS
from semantic_entropy.runs.manifest import read_manifest

STAGE1 = "semantic_entropy.model_vqa_loader"
STAGE2 = "semantic_entropy.compute_se_myself"
STAGE3 = "semantic_entropy.eval_auroc"
ATTENTION = "semantic_entropy.visualize_attention"
REPORT_TOOL = "semantic_entropy.report"

# (label, tool, where in its manifest): "settings.x", "inputs.x" (the path) or "details.x".
HEADLINE = (
    ("model", STAGE1, "settings.model_path"),
    ("vision tower", STAGE1, "settings.vision_tower"),
    ("question file", STAGE1, "inputs.question_file"),
    ("image folder", STAGE1, "settings.image_folder"),
    ("conversation mode", STAGE1, "settings.conv_mode"),
    ("dtype (language model / CLIP)", STAGE1, "dtypes"),
    ("samples per question", STAGE1, "settings.sampling_num_samples"),
    ("sampling temperature", STAGE1, "settings.sampling_temperature"),
    ("top-k / top-p", STAGE1, "topkp"),
    ("max new tokens", STAGE1, "settings.sampling_max_new_tokens"),
    ("sampling seed", STAGE1, "settings.seed"),
    ("image variants", STAGE1, "settings.image_variants"),
    ("judge", STAGE2, "settings.judge"),
    ("judge model", STAGE2, "settings.judge_model"),
    ("clustering", STAGE2, "strictness"),
    ("labels", STAGE3, "labels"),
    ("histogram bins", STAGE3, "settings.bins"),
    ("bootstrap resamples", STAGE3, "settings.bootstrap"),
    ("bootstrap unit", STAGE3, "settings.cluster_by"),
    ("bootstrap seed", STAGE3, "settings.seed"),
    ("interval level", STAGE3, "settings.confidence"),
    ("paired reference", STAGE3, "settings.compare_to"),
    ("attention layers", ATTENTION, "settings.layers"),
    ("attention heads", ATTENTION, "settings.head_reduce"),
)
# Rows about one kind of evaluation only: without labels stage 3 draws no bootstrap, whatever its
# manifest's defaults say, and with labels the page shows no histograms.
EVALUATION_ROWS = {"labels": DISTRIBUTIONS, "histogram bins": DISTRIBUTIONS, "bootstrap resamples": LABELS,
                   "bootstrap unit": LABELS, "bootstrap seed": LABELS, "interval level": LABELS,
                   "paired reference": LABELS}
NO_LABELS = "none: score distributions only"


def lookup(manifest: dict, where: str):
    """A headline value of a manifest; None when the manifest does not record it.

    >>> m = {"settings": {"dtype": "float16", "vision_dtype": "float32", "sampling_top_k": None},
    ...      "inputs": {"question_file": {"path": "/q.jsonl", "sha256": "ab"}}}
    >>> lookup(m, "dtypes"), lookup(m, "inputs.question_file"), lookup(m, "settings.sampling_top_k")
    ('float16 / float32', '/q.jsonl', None)
    """
    settings = manifest.get("settings", {})
    if where == "dtypes":
        return f"{settings.get('dtype')} / {settings.get('vision_dtype')}" if "dtype" in settings else None
    if where == "topkp":
        if "sampling_top_k" not in settings:
            return None
        return f"{settings.get('sampling_top_k')} / {settings.get('sampling_top_p')}"
    if where == "labels":
        return NO_LABELS if settings.get("mode") == DISTRIBUTIONS else None
    if where == "strictness":
        if "strict" not in settings:
            return None
        return "strict (both directions entail)" if settings["strict"] else "non-strict"
    section, key = where.split(".", 1)
    value = manifest.get(section, {}).get(key)
    return value.get("path") if section == "inputs" and isinstance(value, dict) else value


def pick(manifests: list[dict], tool: str, outputs: set[str]) -> dict | None:
    """The manifest of `tool` whose output is one the page shows, else the tool's first."""
    candidates = [m for m in manifests if m.get("tool") == tool]
    for manifest in candidates:
        if os.path.basename(str(manifest.get("output", ""))) in outputs:
            return manifest
    return candidates[0] if candidates else None


def provenance_data(manifest_paths: list[str], shown_outputs: list[str], mode: str = LABELS) -> dict:
    """{headline: [[label, value, tool]], manifests: [{path, ...manifest}]} ordered by creation time;
    `mode` is the evaluation's (run_files.LABELS or DISTRIBUTIONS)."""
    manifests = []
    for path in dict.fromkeys(manifest_paths):
        manifest = read_manifest(path)
        if manifest is not None and manifest.get("tool") != REPORT_TOOL:  # an earlier page's own manifest
            manifests.append({"path": os.path.abspath(path), **manifest})
    manifests.sort(key=lambda m: str(m.get("created", "")))
    outputs = {os.path.basename(os.path.normpath(p)) for p in shown_outputs}
    headline = []
    for label, tool, where in HEADLINE:
        if EVALUATION_ROWS.get(label, mode) != mode:
            continue
        manifest = pick(manifests, tool, outputs)
        value = None if manifest is None else lookup(manifest, where)
        if value not in (None, {}, []):
            headline.append([label, value, tool])
    return {"headline": headline, "manifests": manifests}
