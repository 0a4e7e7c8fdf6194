"""What the baseline pass reads per question and per image: token ids, and the blurred images."""

from __future__ import annotations

from llava.constants import IMAGE_TOKEN_INDEX
from llava.conversation import build_prompt
from llava.eval.vqa_data import load_image
from llava.mm_utils import process_images, tokenizer_image_token
from semantic_entropy.probes import glsim, vl_uncertainty
from semantic_entropy.probes.baselines import QuestionInputs
from semantic_entropy.probes.no_image_prior import no_image_prompt
from semantic_entropy.sampling.prefix_groups import GroupBatchDataset, split_at_image


def rephrased_suffixes(question_id, text: str, prefix_ids: list[int], tokenizer, conv_mode: str) -> list[list[int]] | None:
    """Per VL-Uncertainty rephrasing, its prompt's ids after the image; None off POPE's template."""
    questions = vl_uncertainty.rephrased_questions(text)
    if questions is None:
        return None
    suffixes = []
    for question in questions:
        prefix, suffix = split_at_image(tokenizer_image_token(build_prompt(question, conv_mode), tokenizer,
                                                              IMAGE_TOKEN_INDEX))
        if prefix != prefix_ids:
            raise ValueError(f"question_id {question_id!r}: rephrasing {question!r} changes the prompt before the image")
        suffixes.append(suffix)
    return suffixes


def object_tokens_of(question_id, text: str, conv_mode: str, tokenizer):
    """glsim.object_positions of a question; an untokenizable object names its question_id."""
    try:
        return glsim.object_positions(text, conv_mode, tokenizer)
    except ValueError as error:
        raise ValueError(f"question_id {question_id!r}: {error}") from None


def question_inputs(record: dict, prefix_ids: list[int], suffix_ids: list[int], tokenizer,
                    conv_mode: str) -> QuestionInputs:
    """The pass's inputs for one generations record whose prompt splits into `prefix_ids` + `suffix_ids`."""
    greedy = record.get("greedy") or {}
    answer_ids = greedy.get("token_ids")
    if not answer_ids:
        raise ValueError(f"question_id {record['question_id']!r}: the greedy answer has no token_ids "
                         "(the detectors teacher-force it); rerun stage 1")
    text = record["prompt"]
    return QuestionInputs(
        question_id=record["question_id"],
        suffix_ids=suffix_ids,
        answer_ids=list(answer_ids),
        no_image_ids=tokenizer_image_token(no_image_prompt(text, conv_mode), tokenizer, IMAGE_TOKEN_INDEX),
        object_tokens=object_tokens_of(record["question_id"], text, conv_mode, tokenizer),
        rephrased_suffixes=rephrased_suffixes(record["question_id"], text, prefix_ids, tokenizer, conv_mode),
    )


class BlurredGroupBatchDataset(GroupBatchDataset):
    """Per planned batch: its groups, their images (G, 3, 336, 336) and the images blurred at
    each radius (R * G, 3, 336, 336), radius-major; each image file is read once."""

    def __init__(self, planned, image_folder, image_processor, model_config, blur_radii):
        super().__init__(planned, image_folder, image_processor, model_config)
        self.blur_radii = tuple(blur_radii)

    def __getitem__(self, index: int) -> dict:
        groups = self.planned[index]
        images = [load_image(self.image_folder, g.image, g.questions[0]["question_id"]) for g in groups]
        blurred = [vl_uncertainty.blurred(image, radius) for radius in self.blur_radii for image in images]
        return {"groups": groups,
                "pixel_values": process_images(images, self.image_processor, self.model_config),
                "blurred_pixel_values": process_images(blurred, self.image_processor, self.model_config)}
