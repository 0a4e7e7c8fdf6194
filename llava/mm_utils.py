"""Image and prompt preprocessing of LLaVA-1.5, with the original package's names and call shapes."""

from __future__ import annotations

import torch
from PIL import Image

from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX


def background_color(image_mean) -> tuple[int, ...]:
    """Padding colour of LLaVA-1.5: the processor's mean in 0..255, truncated.

    >>> background_color([0.48145466, 0.4578275, 0.40821073])
    (122, 116, 104)
    """
    return tuple(int(x * 255) for x in image_mean)


def expand2square(pil_img: Image.Image, background_color) -> Image.Image:
    """Pad to a square of side max(w, h), the image pasted centred at offset (max - min) // 2."""
    width, height = pil_img.size
    if width == height:
        return pil_img
    if width > height:
        result = Image.new(pil_img.mode, (width, width), background_color)
        result.paste(pil_img, (0, (width - height) // 2))
        return result
    result = Image.new(pil_img.mode, (height, height), background_color)
    result.paste(pil_img, ((height - width) // 2, 0))
    return result


def process_images(images, image_processor, model_cfg):
    """Pixel tensors (N, 3, 336, 336) as LLaVA-1.5 makes them (`image_aspect_ratio` "pad")."""
    image_aspect_ratio = getattr(model_cfg, "image_aspect_ratio", None)
    if image_aspect_ratio == "pad":
        fill = background_color(image_processor.image_mean)
        tensors = [
            image_processor(expand2square(image, fill), return_tensors="pt")["pixel_values"][0] for image in images
        ]
        if all(t.shape == tensors[0].shape for t in tensors):
            return torch.stack(tensors, dim=0)
        return tensors
    if image_aspect_ratio in (None, "", "square"):
        return image_processor(images, return_tensors="pt")["pixel_values"]
    raise ValueError(f"image_aspect_ratio {image_aspect_ratio!r} is not supported by this runtime (LLaVA-1.5 uses 'pad')")


def tokenizer_image_token(prompt, tokenizer, image_token_index=IMAGE_TOKEN_INDEX, return_tensors=None):
    """Token ids of `prompt` with `image_token_index` where '<image>' was.

    Each chunk between images is tokenized with BOS; only the first chunk's BOS is kept, as in
    the original. With the Llama-2 tokenizer the chunk after the image starts 29871, 13 ("▁", "\\n").
    """
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split(DEFAULT_IMAGE_TOKEN)]
    input_ids: list[int] = []
    offset = 0
    if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        input_ids.append(chunks[0][0])
    for index, chunk in enumerate(chunks):
        if index > 0:
            input_ids.append(image_token_index)
        # Later chunks also start with BOS; the original drops `offset` leading ids of each.
        input_ids.extend(chunk[offset:])
    if return_tensors is None:
        return input_ids
    if return_tensors == "pt":
        return torch.tensor(input_ids, dtype=torch.long)
    raise ValueError(f"Unsupported tensor type: {return_tensors}")


def get_model_name_from_path(model_path: str) -> str:
    """The model id written into answer records: the folder name (with a checkpoint-N parent)."""
    parts = model_path.strip("/").split("/")
    if parts[-1].startswith("checkpoint-"):
        return parts[-2] + "_" + parts[-1]
    return parts[-1]
