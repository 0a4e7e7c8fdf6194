"""What the method-v2 pass reads per question and per image: the object's tokens, and the crops."""

from __future__ import annotations

from llava.eval.vqa_data import load_image
from llava.mm_utils import process_images
from semantic_entropy.probes.baseline_inputs import object_tokens_of
from semantic_entropy.probes.method_probes import MethodQuestion, pixel_box
from semantic_entropy.sampling.prefix_groups import GroupBatchDataset


def method_question(record: dict, suffix_ids: list[int], tokenizer, conv_mode: str) -> MethodQuestion:
    """The pass's inputs for one generations record whose prompt's ids after the image are `suffix_ids`."""
    return MethodQuestion(question_id=record["question_id"], suffix_ids=suffix_ids,
                          object_tokens=object_tokens_of(record["question_id"], record["prompt"], conv_mode, tokenizer))


def cropped(image, box):
    """The PIL image cropped to a fractional (left, top, right, bottom) box."""
    return image.crop(pixel_box(box, *image.size))


class CroppedGroupBatchDataset(GroupBatchDataset):
    """Per planned batch: its groups, their images (G, 3, 336, 336) and each image's crops
    (C * G, 3, 336, 336), crop-major, through LLaVA's own image pipeline; each file is read once."""

    def __init__(self, planned, image_folder, image_processor, model_config, crop_boxes):
        super().__init__(planned, image_folder, image_processor, model_config)
        self.crop_boxes = tuple(crop_boxes)

    def __getitem__(self, index: int) -> dict:
        groups = self.planned[index]
        images = [load_image(self.image_folder, g.image, g.questions[0]["question_id"]) for g in groups]
        crops = [cropped(image, box) for box in self.crop_boxes for image in images]
        return {"groups": groups,
                "pixel_values": process_images(images, self.image_processor, self.model_config),
                "crop_pixel_values": process_images(crops, self.image_processor, self.model_config)}
