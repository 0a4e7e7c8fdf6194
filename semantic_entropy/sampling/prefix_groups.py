"""Grouping questions by image so that each image's prompt prefix is computed once.

In the LLaVA-1.5 prompt the image comes before the question:
`<system> USER: <image>\\n{question} ASSISTANT:`. With causal attention, the keys and values of
everything up to and including the image do not depend on the question, so the questions of
one image share them. A group is the questions of one image (same prefix tokens); a batch is a
few groups, a group larger than a batch is cut into parts that each recompute the prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llava.constants import IMAGE_TOKEN_INDEX
from llava.conversation import build_prompt
from llava.eval.vqa_data import load_image
from llava.mm_utils import process_images, tokenizer_image_token


def split_at_image(input_ids: list[int]) -> tuple[list[int], list[int]]:
    """(prefix through the image slot, the question's own tokens).

    >>> split_at_image([1, 5, 6, -200, 29871, 13, 9])
    ([1, 5, 6, -200], [29871, 13, 9])
    """
    if input_ids.count(IMAGE_TOKEN_INDEX) != 1:
        raise ValueError("prefix sharing needs exactly one <image> slot per prompt")
    slot = input_ids.index(IMAGE_TOKEN_INDEX)
    return input_ids[: slot + 1], input_ids[slot + 1 :]


@dataclass
class Group:
    image: str
    prefix_ids: list[int]
    questions: list[dict]  # in question-file order
    suffix_ids: list[list[int]]


def group_questions(questions: list[dict], tokenizer, conv_mode: str) -> list[Group]:
    """Questions grouped by (image, prefix tokens), groups in order of first appearance."""
    groups: dict[tuple, Group] = {}
    for question in questions:
        prompt = build_prompt(question["text"], conv_mode)
        prefix, suffix = split_at_image(tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX))
        key = (question["image"], tuple(prefix))
        if key not in groups:
            groups[key] = Group(question["image"], prefix, [], [])
        groups[key].questions.append(question)
        groups[key].suffix_ids.append(suffix)
    return list(groups.values())


def plan_batches(groups: list[Group], max_questions: int, max_images: int) -> list[list[Group]]:
    """Consecutive groups per batch, at most `max_questions` questions and `max_images` prefixes.

    A group with more than `max_questions` questions is cut into parts of that size.
    """
    if max_questions < 1 or max_images < 1:
        raise ValueError("batch limits must be >= 1")
    parts = []
    for group in groups:
        for start in range(0, len(group.questions), max_questions):
            end = start + max_questions
            parts.append(Group(group.image, group.prefix_ids, group.questions[start:end], group.suffix_ids[start:end]))
    batches, current, count = [], [], 0
    for part in parts:
        if current and (count + len(part.questions) > max_questions or len(current) >= max_images):
            batches.append(current)
            current, count = [], 0
        current.append(part)
        count += len(part.questions)
    if current:
        batches.append(current)
    return batches


class GroupBatchDataset(torch.utils.data.Dataset):
    """Per planned batch: its groups and the (G, 3, 336, 336) pixels of their images, each loaded once."""

    def __init__(self, planned: list[list[Group]], image_folder: str, image_processor, model_config):
        self.planned = planned
        self.image_folder = image_folder
        self.image_processor = image_processor
        self.model_config = model_config

    def __len__(self) -> int:
        return len(self.planned)

    def __getitem__(self, index: int) -> dict:
        groups = self.planned[index]
        images = [load_image(self.image_folder, g.image, g.questions[0]["question_id"]) for g in groups]
        return {"groups": groups, "pixel_values": process_images(images, self.image_processor, self.model_config)}


def planned_batch_loader(dataset, num_workers: int):
    """Iterate a dataset whose items are whole planned batches, in plan order."""
    return torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers)


def group_batches(planned, image_folder, image_processor, model_config, num_workers: int):
    return planned_batch_loader(GroupBatchDataset(planned, image_folder, image_processor, model_config), num_workers)
