"""Stage 2: cluster the sampled answers by meaning and compute uncertainty scores.

    python -m semantic_entropy.compute_se_myself \\
        --generations-file generations.jsonl --output-file uncertainty.jsonl \\
        [--judge exact|nli|llm] [--judge-model PATH] [--strict | --non-strict] \\
        [--question-prefix | --no-question-prefix] [--measures NAME ...] \\
        [--device auto] [--batch-size 32] [--judge-dtype float32] [--judge-chat-template]

Reads stage-1 generations (JSON lines, or the original notes' single JSON object) and appends
one JSON line per question to the output (see `semantic_entropy.scoring.per_question`). Writes
OUTPUT + ".manifest.json" with the resolved settings, versions and input file. Resumable:
question_ids already in the output are skipped, and a half-written last line (a crash) is cut
before appending; resuming with settings that change the scores is refused.

Defaults: the exact judge (free; its scores carry the default names), strict clustering,
question + ' ' + answer for the NLI judge, every registered measure.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata

from tqdm import tqdm

from llava.jsonl_io import JsonlAppender, JsonlError, completed_ids, write_json_atomic
from semantic_entropy.sampling.generations_io import count_questions, detect_shape, iter_generations
from semantic_entropy.scoring.judges import build_judge, resolve_device
from semantic_entropy.scoring.registry import MEASURES_BY_NAME, is_polygraph_name, select_measures
from semantic_entropy.scoring.per_question import ScoringSettings, score_question

# Settings that change the output; a resumed run must match them.
OUTPUT_SETTINGS = ("judge", "judge_model", "strict", "question_prefix", "measures", "judge_dtype", "judge_chat_template")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generations-file", required=True, help="stage-1 generations (JSON lines or notes JSON)")
    parser.add_argument("--output-file", required=True, help="uncertainty JSON lines, appended to (resumable)")
    parser.add_argument("--judge", choices=("exact", "nli", "llm"), default="exact",
                        help="how answers are grouped by meaning (default: exact)")
    parser.add_argument("--judge-model", default=None, help="local model folder for the nli or llm judge")
    strictness = parser.add_mutually_exclusive_group()
    strictness.add_argument("--strict", dest="strict", action="store_true", default=True,
                            help="equivalent = entailment both ways (default)")
    strictness.add_argument("--non-strict", dest="strict", action="store_false",
                            help="equivalent = no contradiction either way and not neutral both ways")
    parser.add_argument("--question-prefix", action=argparse.BooleanOptionalAction, default=True,
                        help="NLI judge sees question + ' ' + answer (default) or the bare answer")
    parser.add_argument("--measures", nargs="+", default=None, metavar="NAME", type=measure_name,
                        help=f"measures to compute (default: all): {', '.join(MEASURES_BY_NAME)}; and "
                             "LM-Polygraph's estimators as polygraph:CLASS[:key=value,...] (extra `polygraph`)")
    parser.add_argument("--device", default="auto", help="device of the judge model: auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--batch-size", type=int, default=32, help="answer pairs per judge forward pass")
    parser.add_argument("--judge-dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    parser.add_argument("--judge-chat-template", action="store_true",
                        help="llm judge: wrap the prompt in the tokenizer's chat template")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.judge_chat_template and args.judge != "llm":
        parser.error("--judge-chat-template is for --judge llm")
    return args


def measure_name(name: str) -> str:
    """argparse type of --measures: a registry name or a polygraph:NAME (checked when built)."""
    if name in MEASURES_BY_NAME or is_polygraph_name(name):
        return name
    raise argparse.ArgumentTypeError(f"invalid choice: {name!r} (choose from {', '.join(MEASURES_BY_NAME)}, "
                                     "polygraph:NAME)")


def resolved_settings(args: argparse.Namespace) -> dict:
    uses_model = args.judge != "exact"
    return {
        "judge": args.judge,
        "judge_model": os.path.abspath(args.judge_model) if args.judge_model else None,
        "strict": args.strict,
        "question_prefix": args.question_prefix if args.judge == "nli" else None,
        "measures": [measure.name for measure in select_measures(args.measures)],
        "judge_dtype": args.judge_dtype if uses_model else None,
        "judge_chat_template": args.judge_chat_template,
        "device": resolve_device(args.device) if uses_model else None,
        "batch_size": args.batch_size,
    }


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _versions() -> dict:
    versions = {"python": platform.python_version()}
    for package in ("numpy", "torch", "transformers", "tokenizers", "llava-uncertainty", "lm-polygraph"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    try:
        versions["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=os.path.dirname(os.path.abspath(__file__)),
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        versions["git_commit"] = None
    return versions


def manifest_path(output_file: str) -> str:
    return output_file + ".manifest.json"


def check_resume_settings(output_file: str, settings: dict) -> None:
    """Refuse to append to an output written with settings that change the scores."""
    path = manifest_path(output_file)
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        previous = json.load(f).get("settings", {})
    differing = {k: (previous.get(k), settings[k]) for k in OUTPUT_SETTINGS if previous.get(k) != settings[k]}
    if differing:
        details = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in differing.items())
        raise JsonlError(
            f"{output_file} was written with other settings ({details}); use another --output-file or delete it"
        )


def run(args: argparse.Namespace, argv: Sequence[str] | None = None) -> dict:
    """Score every question not yet in the output; returns the final manifest."""
    settings = resolved_settings(args)
    done = completed_ids(args.output_file)
    if done:
        check_resume_settings(args.output_file, settings)
    judge = build_judge(
        args.judge, model_path=args.judge_model, question_prefix=args.question_prefix,
        device=settings["device"] or "cpu", batch_size=args.batch_size, dtype=args.judge_dtype,
        use_chat_template=args.judge_chat_template,
    )
    measures = select_measures(args.measures, judge=judge)  # polygraph:NAME measures read the judge
    scoring = ScoringSettings(judge=judge, measures=tuple(measures), strict=args.strict)
    total = count_questions(args.generations_file)
    manifest = {
        "stage": "semantic_entropy.compute_se_myself",
        "command": [sys.executable, "-m", "semantic_entropy.compute_se_myself",
                    *(sys.argv[1:] if argv is None else argv)],
        "input_file": os.path.abspath(args.generations_file),
        "input_shape": detect_shape(args.generations_file),
        "input_sha256": _sha256(args.generations_file),
        "output_file": os.path.abspath(args.output_file),
        "settings": settings,
        "judge": judge.describe(),
        "score_names": scoring.score_names(),
        "versions": _versions(),
        "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "status": "running",
    }
    write_json_atomic(manifest_path(args.output_file), manifest)

    skipped: dict[str, dict] = {}
    written = 0
    with JsonlAppender(args.output_file) as out, tqdm(total=total, desc="scores", unit="q", file=sys.stderr) as bar:
        bar.update(len(done))
        for record in iter_generations(args.generations_file):
            if record.question_id in done:
                continue
            output, skipped_here = score_question(record, scoring)
            for skip in skipped_here:
                if skip.measure not in skipped:
                    skipped[skip.measure] = {"missing": list(skip.missing), "questions": 0}
                    bar.write(f"skipping {skip.measure} where the generations lack {', '.join(skip.missing)} "
                              f"(first: {record.where()})", file=sys.stderr)
                skipped[skip.measure]["questions"] += 1
            out.write(output)
            written += 1
            bar.update(1)

    manifest.update(
        status="complete",
        finished_at=datetime.datetime.now(datetime.timezone.utc).isoformat(),
        counts={"written": written, "already_done": len(done), "input_questions": total},
        skipped_measures=skipped,
    )
    write_json_atomic(manifest_path(args.output_file), manifest)
    for name, info in skipped.items():
        print(f"skipped {name} for {info['questions']} question(s): no {', '.join(info['missing'])}", file=sys.stderr)
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args, argv)
    except (JsonlError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
