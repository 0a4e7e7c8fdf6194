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
