"""Questions, images and prompts for the answer scripts: loading with clear errors, chunking, batching."""

from __future__ import annotations

import math
import os

import torch
from PIL import Image, UnidentifiedImageError

from llava.constants import IMAGE_TOKEN_INDEX
from llava.conversation import build_prompt, conv_templates
from llava.jsonl_io import JsonlError, iter_jsonl
from llava.mm_utils import process_images, tokenizer_image_token

QUESTION_FIELDS = ("question_id", "image", "text")


def load_questions(path: str) -> list[dict]:
    """Question records in file order; a missing field or duplicate question_id names file and line."""
    questions, seen = [], {}
    for line_number, record in iter_jsonl(path):
        for field in QUESTION_FIELDS:
            if field not in record:
                raise JsonlError(f"{path}:{line_number}: question lacks field {field!r}")
        qid = record["question_id"]
        if qid in seen:
            raise JsonlError(f"{path}:{line_number}: duplicate question_id {qid!r} (first on line {seen[qid]})")
        seen[qid] = line_number
        questions.append(record)
    return questions


def split_list(items: list, n: int) -> list[list]:
    """Split into n consecutive chunks of ceil(len/n), as the original LLaVA scripts do."""
    chunk_size = math.ceil(len(items) / n)
    return [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]


def get_chunk(items: list, n: int, k: int) -> list:
    if not 0 <= k < n:
        raise ValueError(f"--chunk-idx {k} is outside 0..{n - 1}")
    chunks = split_list(items, n)
    return chunks[k] if k < len(chunks) else []


def questions_of_chunk(path: str, num_chunks: int = 1, chunk_idx: int = 0) -> list[dict]:
    """This chunk's questions of a question file; a missing or empty file is an error naming it."""
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"question file {path} does not exist")
    questions = load_questions(path)
    if not questions:
        raise ValueError(f"question file {path} has no questions")
    return get_chunk(questions, num_chunks, chunk_idx)


def load_image(image_folder: str, image_file: str, question_id) -> Image.Image:
    """The question's image as RGB; a missing or unreadable file names it and the question_id."""
    path = os.path.join(image_folder, image_file)
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"image {path} of question_id {question_id!r} does not exist") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"image {path} of question_id {question_id!r} cannot be read: {e}") from None


class QuestionDataset(torch.utils.data.Dataset):
    """Per question: its record, prompt ids with the image slot, and the (3, 336, 336) pixels."""

    def __init__(self, questions, image_folder, tokenizer, image_processor, model_config, conv_mode):
        if conv_mode not in conv_templates:
            raise ValueError(f"unknown --conv-mode {conv_mode!r}; known: {sorted(conv_templates)}")
        self.questions = questions
        self.image_folder = image_folder
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.model_config = model_config
        self.conv_mode = conv_mode

    def __len__(self) -> int:
        return len(self.questions)

    def __getitem__(self, index: int) -> dict:
        question = self.questions[index]
        image = load_image(self.image_folder, question["image"], question["question_id"])
        pixels = process_images([image], self.image_processor, self.model_config)[0]
        prompt = build_prompt(question["text"], self.conv_mode)
        input_ids = tokenizer_image_token(prompt, self.tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")
        return {"question": question, "input_ids": input_ids, "pixel_values": pixels, "image_size": image.size}


def collate(items: list[dict]) -> dict:
    return {
        "questions": [item["question"] for item in items],
        "input_ids": [item["input_ids"] for item in items],
        "pixel_values": torch.stack([item["pixel_values"] for item in items]),
        "image_sizes": [item["image_size"] for item in items],
    }


def batches(dataset: QuestionDataset, batch_size: int, num_workers: int):
    """Batches in question order; images load in `num_workers` background processes."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate
    )
