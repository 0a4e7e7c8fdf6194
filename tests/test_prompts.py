"""Snapshot tests of the exact prompt strings and token ids of LLaVA-1.5."""

import pytest
from PIL import Image

from llava.constants import IMAGE_TOKEN_INDEX, POPE_ANSWER_SUFFIX
from llava.conversation import build_prompt, conv_templates
from llava.mm_utils import background_color, expand2square, tokenizer_image_token

POPE_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions. USER: <image>\nIs there a dog in the image?\n"
    "Answer the question using a single word or phrase. ASSISTANT:"
)


def test_pope_prompt_character_for_character():
    conv = conv_templates["vicuna_v1"].copy()
    conv.append_message(conv.roles[0], "<image>\n" + "Is there a dog in the image?" + POPE_ANSWER_SUFFIX)
    conv.append_message(conv.roles[1], None)
    assert conv.get_prompt() == POPE_PROMPT
    assert build_prompt("Is there a dog in the image?" + POPE_ANSWER_SUFFIX, "vicuna_v1") == POPE_PROMPT


def test_llava_v1_says_human():
    prompt = build_prompt("Q", "llava_v1")
    assert prompt == (
        "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the human's questions. USER: <image>\nQ ASSISTANT:"
    )


def test_two_turn_prompt_uses_sep2_after_assistant():
    conv = conv_templates["vicuna_v1"].copy()
    conv.append_message("USER", "hi")
    conv.append_message("ASSISTANT", "Yes")
    conv.append_message("USER", "again")
    conv.append_message("ASSISTANT", None)
    assert conv.get_prompt().endswith(" USER: hi ASSISTANT: Yes</s>USER: again ASSISTANT:")
    assert conv_templates["vicuna_v1"].messages == []  # copy() must not share the message list


def test_tokenizer_image_token_on_llama2(llama2_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(llama2_tokenizer_dir)
    assert tokenizer("\nIs there").input_ids == [1, 29871, 13, 3624, 727]
    ids = tokenizer_image_token(POPE_PROMPT, tokenizer, IMAGE_TOKEN_INDEX)
    head = tokenizer(POPE_PROMPT.split("<image>")[0]).input_ids
    assert ids[0] == 1 and ids.count(1) == 1  # one BOS, the first chunk's
    slot = ids.index(IMAGE_TOKEN_INDEX)
    assert ids[:slot] == head
    assert ids[slot + 1 : slot + 6] == [29871, 13, 3624, 727, 263]  # "▁", "\n", "Is", "there", "a"
    assert ids.count(IMAGE_TOKEN_INDEX) == 1
    assert tokenizer_image_token(POPE_PROMPT, tokenizer, return_tensors="pt").tolist() == ids
    for word, token in (("Yes", 3869), ("No", 1939)):
        assert tokenizer(word).input_ids == [1, token]
    with pytest.raises(ValueError):
        tokenizer_image_token(POPE_PROMPT, tokenizer, return_tensors="np")


def test_background_colour_is_clip_mean_truncated():
    assert background_color([0.48145466, 0.4578275, 0.40821073]) == (122, 116, 104)


@pytest.mark.parametrize("size", [(30, 10), (10, 30), (31, 10), (10, 31)])
def test_expand2square_geometry(size):
    width, height = size
    image = Image.new("RGB", size, (255, 0, 0))
    square = expand2square(image, (122, 116, 104))
    side = max(size)
    assert square.size == (side, side)
    pixels = square.load()
    offset = (side - min(size)) // 2
    if width > height:  # pad above and below
        assert all(pixels[x, offset] == (255, 0, 0) for x in range(side))
        assert pixels[0, offset - 1] == (122, 116, 104)
        assert pixels[0, offset + height - 1] == (255, 0, 0)
        assert pixels[0, offset + height] == (122, 116, 104)
    else:  # pad left and right
        assert all(pixels[offset, y] == (255, 0, 0) for y in range(side))
        assert pixels[offset - 1, 0] == (122, 116, 104)
        assert pixels[offset + width - 1, 0] == (255, 0, 0)
        assert pixels[offset + width, 0] == (122, 116, 104)


def test_square_image_is_returned_unchanged():
    image = Image.new("RGB", (7, 7), (1, 2, 3))
    assert expand2square(image, (0, 0, 0)) is image
