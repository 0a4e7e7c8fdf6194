"""Geometry of the 24x24 patch grid on the original image, proven two ways:

1. the pure functions directly (tiling, resampling, worked examples);
2. end to end through the real preprocessing (pad to square, CLIP resize) and the real model
   classes, with a tiny LLaVA whose weights are set so that its answer tokens attend, in every
   layer and head, to the patch that shows a white square on a black picture: the captured
   hottest patch must be the one the geometry predicts, and its heat must land on the square's
   pixels of the ORIGINAL image, for wide and tall images, with none on the padding.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from llava.constants import IMAGE_TOKEN_INDEX
from llava.mm_utils import process_images
from semantic_entropy.attention import capture as attention_capture
from semantic_entropy.attention import stats as attention_stats
from semantic_entropy.attention.geometry import (GRID, heatmap_to_original, hottest_patch, padded_square,
                                                 patch_box_in_original, patch_coverage, pixel_patch_index)

SIZES = [(300, 200), (180, 260), (201, 100), (100, 201), (640, 480), (333, 333)]


@pytest.mark.parametrize("width,height", SIZES)
def test_patch_boxes_tile_the_original_exactly(width, height):
    covered = np.zeros((height, width), dtype=int)
    area = 0.0
    for row in range(GRID):
        for col in range(GRID):
            box = patch_box_in_original(row, col, width, height)
            if box is None:
                assert patch_coverage(width, height)[row, col] == 0
                continue
            x0, y0, x1, y1 = box
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
            area += (x1 - x0) * (y1 - y0)
            # pixels whose centre lies in the box
            xs = np.arange(width) + 0.5
            ys = np.arange(height) + 0.5
            covered[np.ix_((ys >= y0) & (ys < y1), (xs >= x0) & (xs < x1))] += 1
    assert area == pytest.approx(width * height)
    assert (covered == 1).all()  # every original pixel belongs to exactly one patch


@pytest.mark.parametrize("width,height", SIZES)
def test_exact_resampling_puts_each_patch_on_its_pixels(width, height):
    side, dx, dy = padded_square(width, height)
    rows = pixel_patch_index(height, dy, side)
    cols = pixel_patch_index(width, dx, side)
    for row, col in [(0, 0), (5, 7), (12, 12), (23, 23), (11, 3)]:
        grid = np.zeros((GRID, GRID))
        grid[row, col] = 1.0
        heat = heatmap_to_original(grid, width, height)
        box = patch_box_in_original(row, col, width, height)
        if box is None:
            assert heat.sum() == 0  # padding gets no heat
            continue
        expected = np.outer(rows == row, cols == col)
        assert (heat == expected).all()
        if not expected.any():  # a sliver of the border, thinner than a pixel: no pixel centre in it
            assert min(box[2] - box[0], box[3] - box[1]) < 1
            continue
        ys, xs = np.nonzero(heat)
        assert xs.min() + 0.5 >= box[0] and xs.max() + 0.5 < box[2]
        assert ys.min() + 0.5 >= box[1] and ys.max() + 0.5 < box[3]


def test_smooth_resampling_keeps_padding_out():
    grid = np.zeros((GRID, GRID))
    grid[:4] = 1.0  # the top band is padding on a 300 x 200 image
    assert heatmap_to_original(grid, 300, 200, smooth=True).max() == 0.0
    grid[12, 5] = 1.0
    smooth = heatmap_to_original(grid, 300, 200, smooth=True)
    assert np.unravel_index(smooth.argmax(), smooth.shape) == pytest.approx((106, 68), abs=1)


# ---------------------------------------------------------------------------------------------
# A tiny LLaVA that looks at the brightest patch, by construction
# ---------------------------------------------------------------------------------------------

ROPE_DIM = 7  # last rotary pair of a 16-dim head: turns by 3e-4 rad per position, i.e. barely


@pytest.fixture(scope="module")
def pointing_model(tmp_path_factory):
    """Tiny LLaVA (GQA: 4 query heads on 2 key/value heads) wired so attention goes to white patches.

    CLIP: patch embedding = mean of the normalised pixels into feature 0, no position
    embeddings, every encoder layer the identity; after pre-LayerNorm feature 0 is +5.6 for a
    mostly white patch, -5.6 for a mostly black one (about -2 for padding colour).
    Projector: feature 0 through GELU (so only bright patches stay) into hidden 0; bias 1 into
    hidden 1. Text embeddings: e_1. Language model: no layer writes to the residual stream
    (o_proj, down_proj zero), q = a * hidden_1 and k = hidden_0 on one rotary dimension, so every
    query scores the bright image positions high and every other key 0.
    """
    from llava.model.builder import load_image_processor
    from llava.model.tiny import CLIP_PREPROCESSOR, random_tiny_llava, tiny_clip_config, tiny_text_config

    text = tiny_text_config(vocab_size=40, hidden_size=64, layers=3, heads=4)
    text["num_key_value_heads"] = 2
    model = random_tiny_llava(text, tiny_clip_config(), seed=0)
    head_dim = 16
    with torch.no_grad():
        vision = model.model.vision_tower
        vision = getattr(vision, "vision_model", vision)  # CLIPVisionModel or its inner transformer
        vision.embeddings.patch_embedding.weight.zero_()
        if vision.embeddings.patch_embedding.bias is not None:
            vision.embeddings.patch_embedding.bias.zero_()
        vision.embeddings.patch_embedding.weight[0] = 1.0 / (3 * 14 * 14)
        vision.embeddings.position_embedding.weight.zero_()
        for layer in vision.encoder.layers:
            layer.self_attn.out_proj.weight.zero_()
            layer.self_attn.out_proj.bias.zero_()
            layer.mlp.fc2.weight.zero_()
            layer.mlp.fc2.bias.zero_()
        vision.pre_layrnorm.weight.fill_(1.0)
        vision.pre_layrnorm.bias.zero_()
        projector = model.model.multi_modal_projector
        for linear in (projector.linear_1, projector.linear_2):
            linear.weight.zero_()
            linear.bias.zero_()
        projector.linear_1.weight[0, 0] = 1.0
        projector.linear_2.weight[0, 0] = 1.0
        projector.linear_2.bias[1] = 1.0
        embed = model.get_input_embeddings().weight
        embed.zero_()
        embed[:, 1] = 1.0
        for layer in model.model.language_model.layers:
            attn = layer.self_attn
            for proj in (attn.q_proj, attn.k_proj, attn.o_proj, layer.mlp.down_proj):
                proj.weight.zero_()
            for head in range(4):
                attn.q_proj.weight[head * head_dim + ROPE_DIM, 1] = 4.0
            for head in range(2):
                attn.k_proj.weight[head * head_dim + ROPE_DIM, 0] = 1.0
            layer.input_layernorm.weight.fill_(1.0)
    folder = tmp_path_factory.mktemp("clip_processor")
    (folder / "preprocessor_config.json").write_text(json.dumps(CLIP_PREPROCESSOR))
    return model.eval(), load_image_processor(str(folder))


def white_square_picture(width, height, box):
    """Black picture with the pixels of `box` (x0, y0, x1, y1 integers) white."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    x0, y0, x1, y1 = box
    pixels[y0:y1, x0:x1] = 255
    return Image.fromarray(pixels)


# (width, height, white square, the patch that shows it, by hand; see patch_box_in_original's
# examples). Each square covers its patch's box and spills at most 1.5 px into the neighbours,
# so exactly one patch is mostly white.
CASES = [
    # wide 300 x 200: S 300, dy 50, patch 12.5 px; patch (12, 5) saw x 62.5-75, y 100-112.5
    (300, 200, (62, 99, 76, 114), (12, 5)),
    # tall 180 x 260: S 260, dx 40, patch 10.83 px; patch (10, 12) saw x 90-100.83, y 108.33-119.17
    (180, 260, (89, 107, 102, 120), (10, 12)),
    # wide and larger than 336 (a downsampling resize): 672 x 448, S 672, dy 112, patch 28 px;
    # patch (16, 3) saw x 84-112, y 16 * 28 - 112 = 336 to 364
    (672, 448, (83, 335, 113, 365), (16, 3)),
]


@pytest.mark.parametrize("width,height,square,patch", CASES)
def test_attention_lands_on_the_object_in_the_original_image(pointing_model, width, height, square, patch):
    model, processor = pointing_model
    model.config.image_aspect_ratio = "pad"
    picture = white_square_picture(width, height, square)
    pixels = process_images([picture], processor, model.config)  # (1, 3, 336, 336)
    prompt = torch.tensor([1, 5, 6, 7, IMAGE_TOKEN_INDEX, 8, 9, 10])
    [answer] = attention_capture.answer_with_attention(model, [prompt], pixels, max_new_tokens=2, eos_token_id=2)

    # Every layer, head and answer token looks at the one patch that shows the square.
    n, layers, heads, positions = answer.image.shape
    assert (layers, heads, positions) == (3, 4, 576)
    for t in range(n):
        for layer in range(layers):
            for head in range(heads):
                assert hottest_patch(answer.image[t, layer, head].reshape(GRID, GRID)) == patch
    assert answer.image[0, :, :, patch[0] * GRID + patch[1]].min() > 0.5

    # Mapped back, the heat lands on the square's pixels of the original picture.
    aggregation = attention_stats.Aggregation(range(layers), "mean")
    weights = attention_stats.image_map(answer.image, aggregation, [0])
    heat = heatmap_to_original(weights.reshape(GRID, GRID), width, height)  # (H, W)
    assert heat.shape == (height, width)
    hot = heat >= 0.5 * heat.max()
    x0, y0, x1, y1 = square
    in_square = np.zeros_like(hot)
    in_square[y0:y1, x0:x1] = True
    assert not (hot & ~in_square).any()  # every hot pixel shows the square
    box = patch_box_in_original(*patch, width, height)
    xs, ys = np.arange(width) + 0.5, np.arange(height) + 0.5
    seen = np.outer((ys >= box[1]) & (ys < box[3]), (xs >= box[0]) & (xs < box[2]))
    assert (hot == seen).all()  # and they are exactly the pixels the patch saw
    stats = attention_stats.map_statistics(weights, width, height)
    assert (stats["hottest_row"], stats["hottest_col"]) == patch
    assert stats["padding_share"] < 1e-3  # padding patches get (almost) no attention, and no pixels
    trial = attention_stats.pointing_trial(weights, width, height, [square])
    assert trial["hit"] and 0 < trial["chance"] < 0.01
