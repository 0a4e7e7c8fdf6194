"""Stage 2: cluster the sampled answers by meaning and compute uncertainty scores.

    python -m semantic_entropy.compute_se_myself \\
        --generations-file generations.jsonl --output-file uncertainty.jsonl \\
        [--judge exact|nli|llm] [--judge-model PATH] [--strict | --non-strict] \\
        [--question-prefix | --no-question-prefix] [--measures NAME ...] \\
        [--device auto] [--batch-size 32] [--judge-dtype float32] [--judge-chat-template] \\
        [--judge-window 64] [--judge-cache-size 200000]

Reads stage-1 generations (JSON lines, or the original notes' single JSON object) and appends
one JSON line per question to the output (see `semantic_entropy.scoring.per_question`). Writes
OUTPUT + ".manifest.json" with the resolved settings, versions and the input's hash. Resumable:
question_ids already in the output are skipped, and a half-written last line (a crash) is cut
before appending; resuming with settings that change the scores, or after the generations file
changed, is refused.

The nli and llm judges run on --device (a GPU when there is one): the answer pairs of
--judge-window questions at a time go to the model together, sorted by length into padded
batches of --batch-size, and every verdict is cached on the judge and its exact input, so a
pair that recurs in a later question is not judged again. `--judge llm --judge-model` takes a
causal-LM folder or an original LLaVA folder (config with mm_* keys), whose language model
alone is loaded and asked in LLaVA's vicuna_v1 conversation. The manifest records the
judge's cache hit rate.

Defaults: the exact judge (free; its scores carry the default names), strict clustering,
question + ' ' + answer for the NLI judge, every registered measure. Measures whose inputs the
generations lack are left out: silently by default, in one line when asked for by --measures.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Iterator, Sequence

from tqdm import tqdm

from llava.cli import check_readable_file, new_parser, positive_int, run_main
from semantic_entropy.runs.lock import is_locked
from semantic_entropy.runs.record_output import RecordOutput, RunSpec, open_outputs
from semantic_entropy.sampling.generations_io import QuestionGenerations, count_questions, detect_shape, \
    iter_generations
from llava.utils import resolve_device
from semantic_entropy.scoring.judge_cache import JudgeCache
from semantic_entropy.scoring.judges import Judge, PairwiseJudge, build_judge
from semantic_entropy.scoring.per_question import ScoringSettings, score_question
from semantic_entropy.scoring.registry import MEASURES_BY_NAME, is_polygraph_name, select_measures

TOOL = "semantic_entropy.compute_se_myself"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = new_parser(__doc__)
    parser.add_argument("--generations-file", required=True, help="stage-1 generations (JSON lines or notes JSON)")
    parser.add_argument("--output-file", required=True, help="uncertainty JSON lines, appended to (resumable)")
    parser.add_argument("--judge", choices=("exact", "nli", "llm"), default="exact",
                        help="how answers are grouped by meaning")
    parser.add_argument("--judge-model", default=None, help="local model folder for the nli or llm judge")
    strictness = parser.add_mutually_exclusive_group()
    strictness.add_argument("--strict", dest="strict", action="store_true", default=True,
                            help="equivalent = entailment both ways")
    strictness.add_argument("--non-strict", dest="strict", action="store_false",
                            help="equivalent = no contradiction either way and not neutral both ways")
    parser.add_argument("--question-prefix", action=argparse.BooleanOptionalAction, default=True,
                        help="NLI judge sees question + ' ' + answer, or (--no-question-prefix) the bare answer")
    parser.add_argument("--measures", nargs="+", default=None, metavar="NAME", type=measure_name,
                        help=f"measures to compute (None = all): {', '.join(MEASURES_BY_NAME)}; and "
                             "LM-Polygraph's estimators as polygraph:CLASS[:key=value,...] (extra `polygraph`)")
    parser.add_argument("--device", default="auto", help="device of the judge model: auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--batch-size", type=int, default=32, help="answer pairs per judge forward pass")
    parser.add_argument("--judge-dtype", choices=("float32", "float16", "bfloat16"), default="float32",
                        help="dtype of the judge model")
    parser.add_argument("--judge-chat-template", action="store_true",
                        help="llm judge: wrap the prompt in the tokenizer's chat template")
    parser.add_argument("--judge-window", type=positive_int, default=64,
                        help="questions whose answer pairs are judged together (fills the judge's batches)")
    parser.add_argument("--judge-cache-size", type=positive_int, default=200_000,
                        help="verdicts the judge keeps (least recently used dropped); at least a window's pairs")
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


def run_spec(args: argparse.Namespace) -> RunSpec:
    settings = resolved_settings(args)
    execution = {"device": settings.pop("device"), "batch_size": settings.pop("batch_size"),
                 "judge_window": args.judge_window, "judge_cache_size": args.judge_cache_size}
    return RunSpec(TOOL, settings, {"generations_file": args.generations_file}, execution)


def report_unavailable(skipped: dict, asked: list[str] | None) -> None:
    """One line naming the asked-for measures the generations could not feed (default: say nothing)."""
    if asked is None:
        return
    names = [name for name in skipped if name in asked]
    if names:
        print("not computed, the generations lack their inputs: "
              + "; ".join(f"{name} (no {', '.join(skipped[name]['missing'])}; {skipped[name]['questions']} questions)"
                          for name in names), file=sys.stderr)


def prefetched(records: Iterable[QuestionGenerations], done: set, judge: Judge,
               window: int) -> Iterator[QuestionGenerations]:
    """The records not yet done, `window` at a time, each window's pairs judged in one go first."""
    pending: list[QuestionGenerations] = []

    def flush():
        judge.prefetch([(r.question, r.sample_texts, r.greedy.text if r.greedy else None) for r in pending])
        yield from pending
        pending.clear()

    for record in records:
        if record.question_id in done:
            continue
        pending.append(record)
        if len(pending) == window:
            yield from flush()
    yield from flush()


def run(args: argparse.Namespace, argv: Sequence[str] | None = None) -> dict:
    """Score every question not yet in the output; returns the final manifest."""
    generations_file = check_readable_file(args.generations_file, "generations file")
    holder = is_locked(generations_file)
    if holder:
        raise ValueError(f"{generations_file} is still being written ({holder}); score it when stage 1 is done")
    total = count_questions(generations_file)
    output = RecordOutput(args.output_file, run_spec(args))
    with open_outputs([output]):
        done = output.done
        judge = build_judge(
            args.judge, model_path=args.judge_model, question_prefix=args.question_prefix,
            device=output.spec.execution["device"] or "cpu", batch_size=args.batch_size, dtype=args.judge_dtype,
            use_chat_template=args.judge_chat_template, cache=JudgeCache(args.judge_cache_size),
        )
        measures = select_measures(args.measures, judge=judge)  # polygraph:NAME measures read the judge
        scoring = ScoringSettings(judge=judge, measures=tuple(measures), strict=args.strict)
        output.record_details({"input_shape": detect_shape(generations_file), "judge": judge.describe(),
                               "score_names": scoring.score_names()})
        skipped: dict[str, dict] = {}
        written = 0
        with output.appender() as out, tqdm(total=total, desc="scores", unit="q", file=sys.stderr) as bar:
            bar.update(len(done))
            for record in prefetched(iter_generations(generations_file), done, judge, args.judge_window):
                scored, skipped_here = score_question(record, scoring)
                for skip in skipped_here:
                    entry = skipped.setdefault(skip.measure, {"missing": list(skip.missing), "questions": 0,
                                                              "first": record.where()})
                    entry["questions"] += 1
                out.write(scored)
                written += 1
                bar.update(1)
        judge_stats = judge.cache_stats() if isinstance(judge, PairwiseJudge) else None
        output.finish(order=None, details={"counts": {"written": written, "already_done": len(done),
                                                      "input_questions": total},
                                           "skipped_measures": skipped, "judge_cache": judge_stats})
    report_unavailable(skipped, args.measures)
    print(f"wrote {os.path.abspath(output.path)} ({written} new, {len(done)} already there)", file=sys.stderr)
    return output.manifest


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(lambda: run(parse_args(argv), argv))


if __name__ == "__main__":
    sys.exit(main())
