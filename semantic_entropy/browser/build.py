"""Build one run's results page: find its files, gather every part of the data, write the HTML and its manifest."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from semantic_entropy.browser.attention_data import attention_data
from semantic_entropy.browser.images import image_entries
from semantic_entropy.browser.page import render_page
from semantic_entropy.browser.provenance import REPORT_TOOL, STAGE1, pick, provenance_data
from semantic_entropy.browser.questions import question_data
from semantic_entropy.browser.run_files import LABELS, RunFiles, find_run_files
from semantic_entropy.browser.summary import distributions_summary, summary_data
from semantic_entropy.browser.tokens import token_namer
from semantic_entropy.runs.manifest import describe_inputs, manifest_path, new_manifest, now, write_manifest


PATH_OPTIONS = ("run_dir", "output", "eval_dir", "attention_dir", "generations_file", "image_folder")


@dataclass(frozen=True)
class ReportOptions:
    run_dir: str
    output: str
    eval_dir: str | None = None
    attention_dir: str | None = None
    generations_file: str | None = None
    image_folder: str | None = None  # None: the one stage 1 recorded
    thumbnail_size: int = 320
    link_images: bool = False
    tokenizer: str = "auto"  # "auto": stage 1's model folder; "none": token ids only
    title: str | None = None


def stage1_setting(provenance: dict, outputs: list[str], key: str):
    manifest = pick(provenance["manifests"], STAGE1, {os.path.basename(p) for p in outputs})
    return None if manifest is None else manifest.get("settings", {}).get(key)


def attention_manifests(attention_dir: str | None) -> list[str]:
    if attention_dir is None:
        return []
    path = manifest_path(os.path.join(attention_dir, "attention_stats.jsonl"))
    return [path] if os.path.isfile(path) else []


def summary_of(files: RunFiles) -> dict:
    """The metrics with labels; the score distributions without."""
    return summary_data(files.summary) if files.mode == LABELS else distributions_summary(files.summary)


def gather(options: ReportOptions) -> tuple[dict, list[str], dict]:
    """(the page's data, notes for the user, input files for the manifest)."""
    files = find_run_files(options.run_dir, options.eval_dir, options.generations_file)
    outputs = [files.generations, *(path for _, path in files.uncertainty), files.eval_dir]
    provenance = provenance_data(files.manifests + attention_manifests(options.attention_dir), outputs, files.mode)
    labelled = files.mode == LABELS
    notes = []

    tokenizer_dir = stage1_setting(provenance, outputs, "model_path") if options.tokenizer == "auto" else (
        None if options.tokenizer == "none" else options.tokenizer)
    token_text = token_namer(tokenizer_dir)
    if token_text is None and options.tokenizer != "none":
        notes.append(f"no readable tokenizer at {tokenizer_dir}: the greedy answer's tokens are shown as ids")
    questions = question_data(files.per_question, files.generations, files.uncertainty, token_text, labelled)

    folder = options.image_folder or stage1_setting(provenance, outputs, "image_folder")
    link_from = os.path.dirname(os.path.abspath(options.output)) if options.link_images else None
    images, missing = image_entries(questions["rows"]["image"], folder, options.thumbnail_size, link_from)
    if missing:
        notes.append(f"{len(missing)} of {len(missing) + len(images)} images not found under {folder} "
                     f"(first: {missing[0]}); pass --image-folder")

    attention = None
    inputs = {"metrics" if labelled else "distributions": files.summary, "per_question": files.per_question,
              "generations_file": files.generations, **{f"uncertainty_file_{i}": path for i, (_, path) in enumerate(files.uncertainty)}}
    if options.attention_dir is not None:
        attention = attention_data(options.attention_dir, questions["rows"]["id"])
        inputs["attention_stats"] = os.path.join(options.attention_dir, "attention_stats.jsonl")
        if attention["outsideRun"]:
            notes.append(f"{attention['outsideRun']} attention rows are about questions outside this run: left out")

    title = options.title or f"Results: {os.path.basename(os.path.normpath(os.path.abspath(options.run_dir)))}"
    data = {
        "title": title,
        "run": {"runDir": os.path.abspath(files.run_dir), "evalDir": os.path.abspath(files.eval_dir),
                "generations": os.path.abspath(files.generations),
                "uncertainty": [[label, os.path.abspath(path)] for label, path in files.uncertainty],
                "attentionDir": None if options.attention_dir is None else os.path.abspath(options.attention_dir),
                "built": now()},
        "questions": questions,
        "images": images,
        "attention": attention,
        "mode": files.mode,
        "summary": summary_of(files),
        "provenance": provenance,
        "notes": notes,
    }
    return data, notes, inputs


def write_text_atomic(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    partial = path + ".partial"
    with open(partial, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(partial, path)


def build_report(options: ReportOptions) -> dict:
    """Write the page and `<output>.manifest.json`; returns {output, questions, bytes, notes}."""
    data, notes, inputs = gather(options)
    write_text_atomic(options.output, render_page(data, data["title"]))
    settings = {key: os.path.abspath(value) if key in PATH_OPTIONS and value is not None else value
                for key, value in asdict(options).items()}
    manifest = new_manifest(REPORT_TOOL, options.output, settings, describe_inputs(inputs),
                            details={"notes": notes, "score_columns": data["questions"]["scoreKeys"],
                                     "images_embedded": len(data["images"]),
                                     "attention_questions": 0 if data["attention"] is None
                                     else data["attention"]["questions"]})
    questions = len(data["questions"]["rows"]["id"])
    manifest.update(status="complete", records=questions)
    write_manifest(manifest_path(options.output), manifest)
    return {"output": options.output, "questions": questions, "bytes": os.path.getsize(options.output), "notes": notes}
