"""Where LLaVA-1.5 looks when it answers: attention of the answer tokens over the image.

One question:
    python -m semantic_entropy.visualize_attention --model-path M --image-file F --question TEXT --output-dir D
A question file (LLaVA jsonl), e.g. POPE:
    python -m semantic_entropy.visualize_attention --model-path M --question-file Q --image-folder I \
        --output-dir D [--generations-file G] [--uncertainty-file U] [--pointing-game metadata.json]

For each greedy answer token the attention row of the query that produced it is captured per
layer and head (`semantic_entropy.attention.capture`: sdpa for the model, weights for the few
answer rows only), aggregated as asked (`--head-reduce mean|max`, `--layers a:b`, named in
every figure), mapped back onto the original image (`semantic_entropy.attention.geometry`:
padding and resize undone) and drawn.

Writes into D:
  attention_stats.jsonl / .csv   one row per question: visual attention ratio per layer, region
                                 shares, entropy of the image-attention map, hottest patch and its
                                 box in original pixels (resumable: done question_ids are skipped)
  pages/q<ID>.html               one self-contained page per question (figures embedded), index.html
  png/q<ID>_*.png                the figures: token heat maps, heads of one layer, region shares
  maps/q<ID>.npz                 with --save-maps: per-layer image maps (head mean and max) and region shares
  pointing_game.json             with --pointing-game: hottest patch (mean over heads, all layers) on the
                                 asked object's bbox in "yes" questions, against chance (box area / image area)
  attention_stats.jsonl.manifest.json   settings, inputs, versions (a resume with other settings is refused)

Several GPUs (question-file mode): `torchrun --nproc_per_node K -m semantic_entropy.visualize_attention ...`
deals the batches to the ranks; each rank writes its table rows to its own part file
(`attention_stats.jsonl.rank<r>-of<K>.part`) and its own pages, and rank 0 merges the parts into
the table in question order. `--max-pages N` draws the pages of the first N pending questions.
A resumed run folds leftover parts in first and computes only what is missing.
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch
from tqdm import tqdm

from llava.cli import (add_conv_mode_arg, add_model_args, check_readable_file, load_model_from_args, model_settings,
                       new_parser, positive_int, run_main)
from llava.eval.vqa_data import QuestionDataset, batches, questions_of_chunk
from llava.utils import loader_workers, resolve_device
from semantic_entropy.attention.capture import answer_with_attention
from semantic_entropy.attention.files import STATS_FILE
from semantic_entropy.attention.question_outputs import (add_pointing, draw_question, load_side_files,
                                                         pointing_targets, question_record, save_maps,
                                                         single_question_batch, write_reports)
from semantic_entropy.attention.stats import Aggregation, parse_layer_range
from semantic_entropy.runs import distributed
from semantic_entropy.runs.record_output import RecordOutput, RunSpec, finish_outputs, open_outputs

TOOL = "semantic_entropy.visualize_attention"
SINGLE_QUESTION_ID = "single"


def build_parser():
    parser = new_parser(__doc__)
    add_model_args(parser)
    one = parser.add_argument_group("one question")
    one.add_argument("--image-file", default=None, help="the image of the one question")
    one.add_argument("--question", default=None, help="question text, used as given")
    many = parser.add_argument_group("a question file")
    many.add_argument("--question-file", default=None, help="LLaVA question jsonl")
    many.add_argument("--image-folder", default=None, help="folder the questions' images are relative to")
    many.add_argument("--batch-size", type=positive_int, default=1, help="questions per batch")
    many.add_argument("--num-workers", type=int, default=None, help="image-loading processes; None = 4 on CUDA, 0 on CPU")
    many.add_argument("--limit", type=positive_int, default=None, help="only the first N questions; None = all")
    parser.add_argument("--output-dir", required=True, help="folder of the table, pages and figures")
    add_conv_mode_arg(parser)
    parser.add_argument("--max-new-tokens", "--max_new_tokens", dest="max_new_tokens", type=positive_int, default=128,
                        help="answer length limit in tokens")
    parser.add_argument("--layers", default=None, help="layer range a:b (b exclusive); None = all")
    parser.add_argument("--head-reduce", choices=("mean", "max"), default="mean", help="how heads are combined")
    parser.add_argument("--head-layer", type=int, default=None,
                        help="layer of the head grid; None = the selected layer with the largest visual attention ratio")
    parser.add_argument("--smooth", action="store_true", help="bilinear heat maps for display (default: exact patches)")
    parser.add_argument("--max-pages", type=int, default=None,
                        help="draw pages for at most N questions of this run (0: the table only); None = all")
    parser.add_argument("--save-maps", action="store_true", help="also write maps/q<ID>.npz per question")
    parser.add_argument("--generations-file", default=None, help="stage-1 generations: samples on the page")
    parser.add_argument("--uncertainty-file", default=None, help="stage-2 uncertainty: scores on the page")
    parser.add_argument("--pointing-game", default=None, metavar="METADATA_JSON",
                        help="ShapesPOPE metadata.json with object boxes: score the hottest patch on 'yes' questions")
    return parser


def check_mode(args) -> str:
    single = args.image_file is not None or args.question is not None
    batch = args.question_file is not None or args.image_folder is not None
    if single == batch:
        raise ValueError("give either --image-file and --question, or --question-file and --image-folder")
    if single and (args.image_file is None or args.question is None):
        raise ValueError("one-question mode needs both --image-file and --question")
    if batch and (args.question_file is None or args.image_folder is None):
        raise ValueError("question-file mode needs both --question-file and --image-folder")
    return "single" if single else "batch"


def run_spec(args, mode: str, world_size: int) -> RunSpec:
    """The table's records depend on these; pages, maps and side files do not."""
    settings = {**model_settings(args), "conv_mode": args.conv_mode, "max_new_tokens": args.max_new_tokens,
                "layers": args.layers, "head_reduce": args.head_reduce}
    if mode == "single":
        settings.update(image_file=os.path.abspath(args.image_file), question=args.question)
        inputs = {}
    else:
        settings["image_folder"] = os.path.abspath(args.image_folder)
        inputs = {"question_file": args.question_file}
    inputs["pointing_game"] = args.pointing_game
    return RunSpec(TOOL, settings, inputs, {"device": args.device, "batch_size": args.batch_size,
                                            "processes": world_size})


def remove_single_question_table(stats_path: str) -> None:
    """One-question mode always starts a fresh table (the folder holds one question)."""
    for path in (stats_path, stats_path + ".manifest.json"):
        if os.path.exists(path):
            os.remove(path)


@torch.inference_mode()
def run(args, info: distributed.RankInfo = distributed.SINGLE_PROCESS) -> dict:
    mode = check_mode(args)
    if mode == "single" and info.world_size > 1:
        raise ValueError("one-question mode runs in one process; torchrun shards a --question-file")
    out_dir = os.path.expanduser(args.output_dir)
    os.makedirs(out_dir, exist_ok=True)
    stats_path = os.path.join(out_dir, STATS_FILE)
    if mode == "single":
        check_readable_file(args.image_file, "image file")
        questions = [{"question_id": SINGLE_QUESTION_ID}]
        if info.is_main:
            remove_single_question_table(stats_path)
    else:
        questions = questions_of_chunk(args.question_file)[: args.limit]
    table = RecordOutput(stats_path, run_spec(args, mode, info.world_size), info)
    with open_outputs([table], info):
        summary = write_table(args, info, mode, questions, table, out_dir)
        order = {q["question_id"]: rank for rank, q in enumerate(questions)}
        finish_outputs([table], info, order)
        if info.is_main:
            targets = pointing_targets(_read_json(args.pointing_game)) if args.pointing_game else {}
            summary.update(write_reports(out_dir, stats_path, targets))
            print(json.dumps(summary, indent=1))
            print(f"wrote {stats_path} and the pages under {out_dir}")
        distributed.barrier(info)
    return summary


def _read_json(path: str) -> dict:
    with open(check_readable_file(path, "pointing-game metadata"), encoding="utf-8") as f:
        return json.load(f)


def write_table(args, info, mode: str, questions: list[dict], table: RecordOutput, out_dir: str) -> dict:
    """Answer this rank's share of the pending questions with attention capture; returns the timing summary."""
    pending = [q for q in questions if q["question_id"] not in table.done]
    if table.done and info.is_main:
        print(f"resuming: {len(questions) - len(pending)} questions already in {table.path}")
    tokenizer, model, image_processor, _ = load_model_from_args(args)
    num_layers = model.config.text_config.num_hidden_layers
    aggregation = Aggregation(parse_layer_range(args.layers, num_layers), args.head_reduce)
    if args.head_layer is not None and not 0 <= args.head_layer < num_layers:
        raise ValueError(f"--head-layer {args.head_layer} is outside 0..{num_layers - 1}")
    eos = tokenizer.eos_token_id
    targets = pointing_targets(_read_json(args.pointing_game)) if args.pointing_game else {}
    if mode == "single":
        batch_iter = [single_question_batch(args.image_file, args.question, args.conv_mode, tokenizer,
                                            image_processor, model.config)]
        image_root, mine = None, pending
    else:
        # Batches are planned over all pending work, then dealt: each question meets the same batch
        # (same padding) however many processes run.
        planned = distributed.shard([pending[i : i + args.batch_size] for i in range(0, len(pending), args.batch_size)],
                                    info)
        mine = [q for batch in planned for q in batch]
        dataset = QuestionDataset(mine, args.image_folder, tokenizer, image_processor, model.config, args.conv_mode)
        workers = loader_workers(args.num_workers, model.device)
        batch_iter, image_root = batches(dataset, args.batch_size, workers), args.image_folder
    question_ids = [q["question_id"] for q in pending]
    samples, scores = load_side_files(args.generations_file, args.uncertainty_file,
                                      [] if mode == "single" else question_ids)
    # Pages for the first --max-pages questions of this run, whichever rank answers them.
    drawn_ids = set(question_ids if args.max_pages is None else question_ids[: args.max_pages])

    seconds = {"capture": 0.0, "draw": 0.0}
    answered = 0
    distributed.barrier(info)
    started = time.perf_counter()
    desc = f"rank {info.rank}" if info.world_size > 1 else None
    with table.appender() as rows, tqdm(total=len(mine), unit="q", desc=desc) as bar:
        for batch in batch_iter:
            start = time.perf_counter()
            answers = answer_with_attention(model, batch["input_ids"], batch["pixel_values"], args.max_new_tokens, eos)
            seconds["capture"] += time.perf_counter() - start
            for question, size, answer in zip(batch["questions"], batch["image_sizes"], answers):
                record = question_record(question, size, answer, tokenizer, aggregation, eos)
                if targets:
                    add_pointing(record, answer, targets, eos)
                start = time.perf_counter()
                if question["question_id"] in drawn_ids:
                    image_path = (question["image"] if image_root is None
                                  else os.path.join(image_root, question["image"]))
                    draw_question(out_dir, {**record, "image_path": image_path}, answer, aggregation,
                                  args.head_layer, args.smooth, samples.get(question["question_id"]),
                                  scores.get(question["question_id"]))
                if args.save_maps:
                    save_maps(out_dir, record, answer)
                seconds["draw"] += time.perf_counter() - start
                rows.write(record)
                answered += 1
            bar.update(len(batch["questions"]))
    distributed.barrier(info)
    elapsed = time.perf_counter() - started  # all processes' work: they wait for each other above
    summary = {"questions": len(question_ids), "aggregation": aggregation.name,
               "questions_per_second": len(question_ids) / max(elapsed, 1e-9),
               "seconds_per_question_capture": seconds["capture"] / max(answered, 1),
               "seconds_per_question_drawing": seconds["draw"] / max(answered, 1)}
    if info.world_size > 1:
        summary.update(processes=info.world_size, questions_this_process=answered)
    return summary


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    info = distributed.setup(resolve_device(args.device))
    args.device = info.device
    try:
        return run(args, info)
    finally:
        distributed.teardown(info)


if __name__ == "__main__":
    sys.exit(run_main(main))
