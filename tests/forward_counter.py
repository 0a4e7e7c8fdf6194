"""Counts a loaded model's calls, for tests of what a pass costs."""

import functools


class ForwardCounter:
    """Counts the language model's calls (prefills: inputs_embeds; tree steps: input_ids) with
    their batch rows, and the vision calls with their images."""

    def __init__(self, model):
        self.prefills, self.steps, self.vision = [], [], []
        forward, encode = model.forward, model.encode_images

        @functools.wraps(forward)
        def counted(*args, **kwargs):
            if kwargs.get("inputs_embeds") is not None:
                self.prefills.append(kwargs["inputs_embeds"].shape[0])
            else:
                self.steps.append(kwargs["input_ids"].shape[0])
            return forward(*args, **kwargs)

        def counted_encode(pixel_values):
            self.vision.append(pixel_values.shape[0])
            return encode(pixel_values)

        model.forward, model.encode_images = counted, counted_encode


COST_QUESTIONS = ["Is there a red circle in the image?", "What colour is the triangle?", "Is there a dog in the imange?"]


def two_image_groups(tokenizer, make_input, **record_fields):
    """The pass-cost tests' batch: image a.png with two questions, b.png with one, as prefix groups.

    Returns (groups, inputs): `make_input(record, prefix_ids, suffix_ids)` builds each question's input.
    """
    from llava.conversation import build_prompt
    from llava.mm_utils import tokenizer_image_token
    from semantic_entropy.sampling.prefix_groups import Group, split_at_image

    groups, inputs = [], []
    for image, questions in (("a.png", COST_QUESTIONS[:2]), ("b.png", COST_QUESTIONS[2:])):
        ids = [tokenizer_image_token(build_prompt(t, "vicuna_v1"), tokenizer) for t in questions]
        prefix = split_at_image(ids[0])[0]
        records = [{"question_id": f"{image}{i}", "prompt": t, **record_fields} for i, t in enumerate(questions)]
        groups.append(Group(image, prefix, records, [split_at_image(i)[1] for i in ids]))
        inputs += [make_input(r, prefix, split_at_image(i)[1]) for r, i in zip(records, ids)]
    return groups, inputs
