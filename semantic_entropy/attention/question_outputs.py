"""The attention tool's per-question outputs: table rows, pointing game, figures, pages, maps, reports."""

from __future__ import annotations

import csv
import os

import numpy as np

from llava.conversation import build_prompt
from llava.eval.vqa_data import load_image
from llava.jsonl_io import read_jsonl, read_keyed_jsonl, write_json_atomic
from llava.mm_utils import process_images, tokenizer_image_token
from semantic_entropy.attention.capture import REGIONS, AnswerAttention
from semantic_entropy.attention.files import map_file, safe_name
from semantic_entropy.attention.report import (draw_head_grid, draw_region_shares, draw_token_maps, index_page,
                                               question_page)
from semantic_entropy.attention.stats import (Aggregation, answer_token_rows, image_map, pointing_game,
                                              pointing_trial, question_statistics, region_shares)

MAX_TOKEN_PANELS = 6


def single_question_batch(image_file: str, question: str, conv_mode: str, tokenizer, image_processor,
                          model_config) -> dict:
    """The one-question mode as a batch of one, shaped like `vqa_data.collate`'s."""
    folder, name = os.path.split(os.path.abspath(image_file))
    image = load_image(folder, name, "single")
    prompt = build_prompt(question, conv_mode)
    return {
        "questions": [{"question_id": "single", "image": image_file, "text": question}],
        "input_ids": [tokenizer_image_token(prompt, tokenizer, return_tensors="pt")],
        "pixel_values": process_images([image], image_processor, model_config),
        "image_sizes": [image.size],
    }


def load_side_files(generations_file: str | None, uncertainty_file: str | None, question_ids) -> tuple[dict, dict]:
    """question_id -> sample texts, question_id -> scores; ids of questions missing from a given file are an error."""
    samples, scores = {}, {}
    if generations_file:
        from semantic_entropy.sampling.generations_io import iter_generations

        samples = {g.question_id: g.sample_texts for g in iter_generations(generations_file)}
    if uncertainty_file:
        scores = {qid: r.get("scores", {}) for qid, r in read_keyed_jsonl(uncertainty_file).items()}
    for path, table in ((generations_file, samples), (uncertainty_file, scores)):
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
    from semantic_entropy.demo.world import class_from_question

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


def draw_question(out_dir: str, record: dict, answer: AnswerAttention, aggregation: Aggregation,
                  head_layer: int | None, smooth: bool, samples, scores) -> None:
    """The question's figures (png/) and its self-contained page (pages/)."""
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
    if head_layer is None:  # the selected layer that looks at the image most
        head_layer = layers[int(np.argmax(visual[layers]))]
    per_head = answer.image[rows[0], head_layer]  # (H, N)
    figures = {
        "heat maps per answer token": draw_token_maps(image, panels, aggregation.name, smooth),
        f"heads of layer {head_layer}": draw_head_grid(image, per_head, head_layer,
                                                       repr(record["answer_tokens"][rows[0]]), smooth),
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
        map_file(out_dir, record["question_id"]),
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
