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
  manifest.json                  settings, versions, model path

Several GPUs (question-file mode): `torchrun --nproc_per_node K -m semantic_entropy.visualize_attention ...`
deals the batches to the ranks; each rank writes its table rows to its own part file
(`attention_stats.jsonl.rank<r>-of<K>.part`) and its own pages, and rank 0 merges the parts into
the table in question order. `--max-pages N` draws the pages of the first N pending questions.
A resumed run folds leftover parts in first and computes only what is missing.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import time

import numpy as np
import torch
from tqdm import tqdm

from llava.conversation import build_prompt
from llava.eval.model_vqa_loader import add_model_args, load_model_from_args
from llava.eval.vqa_data import QuestionDataset, batches, load_image, load_questions
from llava.jsonl_io import JsonlAppender, completed_ids, read_jsonl, read_keyed_jsonl, write_json_atomic
from llava.mm_utils import get_model_name_from_path, process_images, tokenizer_image_token
from llava.model.builder import resolve_device
from llava.utils import write_manifest
from semantic_entropy.runs import distributed
from semantic_entropy.attention.capture import REGIONS, AnswerAttention, answer_with_attention
from semantic_entropy.attention.report import (draw_head_grid, draw_region_shares, draw_token_maps, index_page,
                                               question_page)
from semantic_entropy.attention.stats import (Aggregation, answer_token_rows, image_map, parse_layer_range,
                                              pointing_game, pointing_trial, question_statistics, region_shares)

STATS_FILE = "attention_stats.jsonl"
MAX_TOKEN_PANELS = 6


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    one = parser.add_argument_group("one question")
    one.add_argument("--image-file", type=str, default=None)
    one.add_argument("--question", type=str, default=None, help="question text, used as given")
    many = parser.add_argument_group("a question file")
    many.add_argument("--question-file", type=str, default=None)
    many.add_argument("--image-folder", type=str, default=None)
    many.add_argument("--batch-size", type=int, default=1)
    many.add_argument("--num-workers", type=int, default=None,
                      help="image-loading processes (default 4 on CUDA, 0 on CPU)")
    many.add_argument("--limit", type=int, default=None, help="only the first N questions")
    parser.add_argument("--output-dir", type=str, required=True)
    parser.add_argument("--conv-mode", type=str, default="vicuna_v1")
    parser.add_argument("--max-new-tokens", "--max_new_tokens", dest="max_new_tokens", type=int, default=128)
    parser.add_argument("--layers", type=str, default=None, help="layer range a:b (b exclusive; default all)")
    parser.add_argument("--head-reduce", choices=("mean", "max"), default="mean")
    parser.add_argument("--head-layer", type=int, default=None,
                        help="layer of the head grid (default: the selected layer with the largest "
                             "visual attention ratio)")
    parser.add_argument("--smooth", action="store_true", help="bilinear heat maps for display (default: exact patches)")
    parser.add_argument("--max-pages", type=int, default=None,
                        help="draw pages for at most N questions of this run (0: the table only)")
    parser.add_argument("--save-maps", action="store_true", help="also write maps/q<ID>.npz per question")
    parser.add_argument("--generations-file", type=str, default=None, help="stage-1 generations: samples on the page")
    parser.add_argument("--uncertainty-file", type=str, default=None, help="stage-2 uncertainty: scores on the page")
    parser.add_argument("--pointing-game", type=str, default=None, metavar="METADATA_JSON",
                        help="ShapesPOPE metadata.json with object boxes: score the hottest patch on 'yes' questions")
    return parser


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def safe_name(question_id) -> str:
    """File-name form of a question_id.

    >>> safe_name(10000001), safe_name("a/b c")
    ('10000001', 'a_b_c')
    """
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(question_id))


def single_question_batch(args, tokenizer, image_processor, model_config) -> dict:
    """The one-question mode as a batch of one, shaped like `vqa_data.collate`'s."""
    folder, name = os.path.split(os.path.abspath(args.image_file))
    image = load_image(folder, name, "single")
    prompt = build_prompt(args.question, args.conv_mode)
    return {
        "questions": [{"question_id": "single", "image": args.image_file, "text": args.question}],
        "input_ids": [tokenizer_image_token(prompt, tokenizer, return_tensors="pt")],
        "pixel_values": process_images([image], image_processor, model_config),
        "image_sizes": [image.size],
    }


def load_side_files(args, question_ids) -> tuple[dict, dict]:
    """question_id -> sample texts, question_id -> scores; ids of questions missing from a given file are an error."""
    samples, scores = {}, {}
    if args.generations_file:
        from semantic_entropy.sampling.generations_io import iter_generations

        samples = {g.question_id: g.sample_texts for g in iter_generations(args.generations_file)}
    if args.uncertainty_file:
        scores = {qid: r.get("scores", {}) for qid, r in read_keyed_jsonl(args.uncertainty_file).items()}
    for path, table in ((args.generations_file, samples), (args.uncertainty_file, scores)):
        if path:
            missing = [qid for qid in question_ids if qid not in table]
            if missing:
                raise ValueError(f"{path} has no record for question_id(s) {missing[:10]}"
                                 f"{' ...' if len(missing) > 10 else ''} ({len(missing)} missing)")
    return samples, scores


def pointing_targets(metadata: dict) -> dict:
    """image file -> (width, height, {class: [bbox, ...]}) from ShapesPOPE metadata."""
    targets = {}
    for record in metadata["images"]:
        boxes: dict[str, list] = {}
        for obj in record["objects"]:
            boxes.setdefault(obj["class"], []).append(tuple(obj["bbox"]))
        targets[record["image"]] = (record["width"], record["height"], boxes)
    return targets


def asked_class(question_text: str) -> str | None:
    """The ShapesPOPE class a question asks about, or None."""
    from semantic_entropy.demo.shapes_pope import class_from_question

    try:
        return class_from_question(question_text.split("\n")[0])
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# One question
# ---------------------------------------------------------------------------------------------


def question_record(question: dict, size, answer: AnswerAttention, tokenizer, aggregation: Aggregation,
                    eos_token_id: int) -> dict:
    width, height = size
    rows = answer_token_rows(answer.token_ids, eos_token_id)
    record = {
        "question_id": question["question_id"],
        "category": question.get("category"),
        "image": question.get("image"),
        "width": width,
        "height": height,
        "question": question["text"],
        "answer": tokenizer.decode(answer.token_ids, skip_special_tokens=True).strip(),
        "answer_tokens": tokenizer.convert_ids_to_tokens(answer.token_ids),
        "answer_token_ids": answer.token_ids,
        "answer_token_logprobs": [round(v, 6) for v in answer.token_logprobs],
        "ends_with_eos": answer.ends_with_eos,
        "num_layers": int(answer.image.shape[1]),
        "num_heads": int(answer.image.shape[2]),
        "tokens_aggregated": rows,
    }
    record.update(question_statistics(answer.image, answer.regions, answer.region_names, rows, aggregation,
                                      width, height))
    return record


def add_pointing(record: dict, answer: AnswerAttention, targets: dict, eos_token_id: int) -> None:
    """Pointing-game fields for a question about a class present in its image (a 'yes' question)."""
    target = targets.get(record["image"])
    name = asked_class(record["question"])
    if target is None or name is None:
        return
    width, height, boxes = target
    record["pointing_class"] = name
    record["pointing_yes"] = name in boxes
    if name not in boxes:
        return
    rows = answer_token_rows(answer.token_ids, eos_token_id)
    default = Aggregation(range(answer.image.shape[1]), "mean")  # mean over heads, all layers
    trial = pointing_trial(image_map(answer.image, default, rows), width, height, boxes[name])
    record["pointing_hit"] = trial["hit"]
    record["pointing_chance"] = trial["chance"]


def draw_question(out_dir: str, record: dict, answer: AnswerAttention, aggregation: Aggregation, args,
                  samples, scores) -> None:
    image = np.asarray(load_image(*os.path.split(os.path.abspath(record["image_path"])), record["question_id"]))
    rows = record["tokens_aggregated"]
    panels = []
    for t, token in list(enumerate(record["answer_tokens"]))[:MAX_TOKEN_PANELS]:
        panels.append((f"token {t}: {token!r}", image_map(answer.image, aggregation, [t])))
    if len(rows) > 1:
        panels.append(("answer (mean of its tokens)", image_map(answer.image, aggregation, rows)))
    shares = region_shares(answer.regions, rows)  # (L, R)
    layers = list(aggregation.layers)
    visual = shares[:, REGIONS.index("image")]
    head_layer = args.head_layer if args.head_layer is not None else layers[int(np.argmax(visual[layers]))]
    per_head = answer.image[rows[0], head_layer]  # (H, N)
    figures = {
        "heat maps per answer token": draw_token_maps(image, panels, aggregation.name, args.smooth),
        f"heads of layer {head_layer}": draw_head_grid(image, per_head, head_layer,
                                                       repr(record["answer_tokens"][rows[0]]), args.smooth),
        "share of attention per layer": draw_region_shares(
            shares, REGIONS, f"where the answer tokens look, per layer (mean over heads and {len(rows)} token(s))"),
    }
    name = safe_name(record["question_id"])
    os.makedirs(os.path.join(out_dir, "png"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "pages"), exist_ok=True)
    for suffix, png in zip(("tokens", f"heads_L{head_layer}", "regions"), figures.values()):
        with open(os.path.join(out_dir, "png", f"q{name}_{suffix}.png"), "wb") as f:
            f.write(png)
    page = question_page(record, figures, samples, scores)
    with open(os.path.join(out_dir, "pages", f"q{name}.html"), "w", encoding="utf-8") as f:
        f.write(page)


def save_maps(out_dir: str, record: dict, answer: AnswerAttention) -> None:
    os.makedirs(os.path.join(out_dir, "maps"), exist_ok=True)
    np.savez_compressed(
        os.path.join(out_dir, "maps", f"q{safe_name(record['question_id'])}.npz"),
        image_head_mean=answer.image.mean(axis=2),  # (n, L, N)
        image_head_max=answer.image.max(axis=2),  # (n, L, N)
        regions=answer.regions,  # (n, L, H, R)
        region_names=np.array(REGIONS),
        token_ids=np.array(answer.token_ids),
    )


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def csv_row(record: dict) -> dict:
    """Flat CSV form of a table row: lists become numbered columns or space-joined text."""
    row = {}
    for key, value in record.items():
        if key == "visual_ratio":
            row.update({f"visual_ratio_L{i:02d}": v for i, v in enumerate(value)})
        elif key == "hottest_box":
            row.update({f"hottest_box_{k}": (None if value is None else v)
                        for k, v in zip(("x0", "y0", "x1", "y1"), value or (None,) * 4)})
        elif isinstance(value, list):
            row[key] = " ".join(str(v) for v in value)
        else:
            row[key] = value
    return row


def write_csv(jsonl_path: str, csv_path: str) -> None:
    rows = [csv_row(r) for r in read_jsonl(jsonl_path)]
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def check_mode(args) -> str:
    single = args.image_file is not None or args.question is not None
    batch = args.question_file is not None or args.image_folder is not None
    if single == batch:
        raise SystemExit("give either --image-file and --question, or --question-file and --image-folder")
    if single and (args.image_file is None or args.question is None):
        raise SystemExit("one-question mode needs both --image-file and --question")
    if batch and (args.question_file is None or args.image_folder is None):
        raise SystemExit("question-file mode needs both --question-file and --image-folder")
    return "single" if single else "batch"


@torch.inference_mode()
def run(args, info: distributed.RankInfo = distributed.RankInfo(0, 1, "auto")) -> dict:
    mode = check_mode(args)
    if mode == "single" and info.world_size > 1:
        raise SystemExit("one-question mode runs in one process; torchrun shards a --question-file")
    out_dir = os.path.expanduser(args.output_dir)
    os.makedirs(out_dir, exist_ok=True)
    tokenizer, model, image_processor, _ = load_model_from_args(args)
    if info.is_main:
        write_manifest(os.path.join(out_dir, "manifest.json"), vars(args), model_path=os.path.abspath(args.model_path),
                       model_id=get_model_name_from_path(args.model_path), world_size=info.world_size)
    num_layers = model.config.text_config.num_hidden_layers
    aggregation = Aggregation(parse_layer_range(args.layers, num_layers), args.head_reduce)
    if args.head_layer is not None and not 0 <= args.head_layer < num_layers:
        raise SystemExit(f"--head-layer {args.head_layer} is outside 0..{num_layers - 1}")
    eos = tokenizer.eos_token_id
    stats_path = os.path.join(out_dir, STATS_FILE)
    targets = {}
    if args.pointing_game:
        with open(args.pointing_game, encoding="utf-8") as f:
            targets = pointing_targets(json.load(f))

    order: dict = {}
    if mode == "single":
        if os.path.exists(stats_path):
            os.remove(stats_path)  # one question: always a fresh table
        batch_iter = [single_question_batch(args, tokenizer, image_processor, model.config)]
        image_root, question_ids, mine = None, ["single"], ["single"]
    else:
        questions = load_questions(os.path.expanduser(args.question_file))[: args.limit]
        order = {q["question_id"]: rank for rank, q in enumerate(questions)}
        if info.is_main:
            completed_ids(stats_path)  # cuts a line a crash left half-written
            if distributed.leftover_parts(stats_path):  # rows a crashed multi-process run left behind
                distributed.merge_parts_into(stats_path, distributed.leftover_parts(stats_path), order)
        distributed.barrier(info)
        done = completed_ids(stats_path)
        pending = [q for q in questions if q["question_id"] not in done]
        if done and info.is_main:
            print(f"resuming: {len(questions) - len(pending)} questions already in {stats_path}")
        # Batches are planned over all pending work, then dealt: each question meets the same batch
        # (same padding) however many processes run.
        planned = distributed.shard([pending[i : i + args.batch_size] for i in range(0, len(pending), args.batch_size)],
                                    info)
        mine = [q for batch in planned for q in batch]
        dataset = QuestionDataset(mine, args.image_folder, tokenizer, image_processor, model.config, args.conv_mode)
        workers = args.num_workers if args.num_workers is not None else (4 if model.device.type == "cuda" else 0)
        batch_iter, image_root = batches(dataset, args.batch_size, workers), args.image_folder
        question_ids = [q["question_id"] for q in pending]
    samples, scores = load_side_files(args, question_ids)
    # Pages for the first --max-pages questions of this run, whichever rank answers them.
    drawn_ids = set(question_ids if args.max_pages is None else question_ids[: args.max_pages])

    seconds = {"capture": 0.0, "draw": 0.0}
    answered = 0
    distributed.barrier(info)
    started = time.perf_counter()
    desc = f"rank {info.rank}" if info.world_size > 1 else None
    with JsonlAppender(distributed.part_path(stats_path, info)) as table, \
            tqdm(total=len(mine), unit="q", desc=desc) as bar:
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
                    draw_question(out_dir, {**record, "image_path": image_path}, answer, aggregation, args,
                                  samples.get(question["question_id"]), scores.get(question["question_id"]))
                if args.save_maps:
                    save_maps(out_dir, record, answer)
                seconds["draw"] += time.perf_counter() - start
                table.write(record)
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
    if info.is_main:
        if distributed.leftover_parts(stats_path):
            distributed.merge_parts_into(stats_path, distributed.leftover_parts(stats_path), order)
        summary.update(write_reports(out_dir, stats_path, targets))
        print(json.dumps(summary, indent=1))
    distributed.barrier(info)
    return summary


def write_reports(out_dir: str, stats_path: str, targets: dict) -> dict:
    """The CSV, the index page and (with targets) pointing_game.json, from the finished table."""
    write_csv(stats_path, os.path.join(out_dir, "attention_stats.csv"))
    records = read_jsonl(stats_path)
    pages = [(f"pages/q{safe_name(r['question_id'])}.html", r["question_id"], r["question"], r["answer"])
             for r in records if os.path.exists(os.path.join(out_dir, "pages", f"q{safe_name(r['question_id'])}.html"))]
    with open(os.path.join(out_dir, "index.html"), "w", encoding="utf-8") as f:
        f.write(index_page(pages))
    if not targets:
        return {}
    game = pointing_game({"hit": r["pointing_hit"], "chance": r["pointing_chance"]}
                         for r in records if r.get("pointing_yes") and "pointing_hit" in r)
    game["definition"] = ("hit: centre of the hottest patch (mean over heads, all layers, answer tokens) in the "
                          "asked object's bbox, 'yes' questions only; chance: bbox area / image area")
    write_json_atomic(os.path.join(out_dir, "pointing_game.json"), game)
    print(f"pointing game: {game['score']} hit rate over {game['trials']} 'yes' questions "
          f"(chance {game['chance']})" if game["trials"] else "pointing game: no 'yes' question with a box")
    return {"pointing_game": game}


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    info = distributed.setup(resolve_device(args.device))
    args.device = info.device
    try:
        return run(args, info)
    finally:
        distributed.teardown(info)


if __name__ == "__main__":
    main()
