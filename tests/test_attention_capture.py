"""Attention capture: the captured rows equal eager attention's, decoding is unchanged, regions sum to 1."""

import numpy as np
import pytest
import torch

from llava.constants import IMAGE_TOKEN_INDEX
from llava.model.generation import greedy_decode
from semantic_entropy.attention.capture import (CAPTURE_ATTENTION, REGIONS, AnswerAttentionCollector,
                                                answer_with_attention, attention_capture, prompt_layout)
from semantic_entropy.attention.stats import Aggregation, answer_token_rows, question_statistics

PROMPTS = [
    torch.tensor([1, 5, 6, 7, IMAGE_TOKEN_INDEX, 8, 9, 10, 11]),
    torch.tensor([1, 5, IMAGE_TOKEN_INDEX, 8, 9]),  # shorter: left-padded in the batch
]
MAX_NEW_TOKENS = 4
NO_EOS = -1  # an id never generated: every row decodes MAX_NEW_TOKENS tokens


@pytest.fixture(scope="module")
def gqa_model():
    """Tiny random LLaVA, 3 layers, 4 query heads on 2 key/value heads."""
    from llava.model.tiny import random_tiny_llava, tiny_clip_config, tiny_text_config

    text = tiny_text_config(vocab_size=64, hidden_size=64, layers=3, heads=4)
    text["num_key_value_heads"] = 2
    model = random_tiny_llava(text, tiny_clip_config(), seed=1)
    pixels = torch.randn(2, 3, 336, 336, generator=torch.Generator().manual_seed(0))
    return model, pixels


@pytest.fixture(scope="module")
def captured(gqa_model):
    model, pixels = gqa_model
    return answer_with_attention(model, PROMPTS, pixels, MAX_NEW_TOKENS, eos_token_id=NO_EOS)


def test_captured_rows_equal_eager_attention(gqa_model, captured):
    model, pixels = gqa_model
    previous = model.config.text_config._attn_implementation
    model.set_attn_implementation({"text_config": "eager"})
    try:
        features = model.encode_images(pixels)
        for row, answer in enumerate(captured):
            assert len(answer.token_ids) == MAX_NEW_TOKENS
            # One eager pass over prompt + answer (no padding, no cache): row T0 - 1 + t produced token t.
            ids = torch.cat([PROMPTS[row], torch.tensor(answer.token_ids[:-1])])
            embeds, mask, positions = model.embed_multimodal([ids], features[row : row + 1])
            with torch.no_grad():
                out = model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, output_attentions=True,
                            use_cache=False)
            eager = torch.stack(out.attentions)[:, 0].float()  # (L, H, T, T)
            prompt_length = embeds.shape[1] - (MAX_NEW_TOKENS - 1)
            layout = prompt_layout([PROMPTS[row]], 576, prompt_length)
            region_ids = layout.region_ids[0]
            for t in range(MAX_NEW_TOKENS):
                query = prompt_length - 1 + t
                expected_image = eager[:, :, query, layout.image_columns[0]].numpy()  # (L, H, 576)
                np.testing.assert_allclose(answer.image[t], expected_image, atol=1e-5, rtol=0)
                full_ids = torch.cat([region_ids, torch.full((t,), REGIONS.index("answer"))])
                for r, name in enumerate(REGIONS):
                    expected = eager[:, :, query, : query + 1][..., full_ids == r].sum(-1).numpy()  # (L, H)
                    np.testing.assert_allclose(answer.regions[t, :, :, r], expected, atol=1e-5, rtol=0,
                                               err_msg=f"region {name}")
    finally:
        model.set_attn_implementation({"text_config": previous})


def test_decoding_is_unchanged_by_the_capture(gqa_model, captured):
    model, pixels = gqa_model
    with torch.no_grad():
        embeds, mask, positions = model.embed_multimodal(PROMPTS, model.encode_images(pixels))
        plain = greedy_decode(model, embeds, mask, positions, MAX_NEW_TOKENS, eos_token_id=NO_EOS)
    for answer, reference in zip(captured, plain):
        assert answer.token_ids == reference.token_ids
        np.testing.assert_allclose(answer.token_logprobs, reference.token_logprobs, atol=1e-5)


def test_regions_sum_to_one_and_visual_ratio_is_the_image_share(captured):
    for answer in captured:
        np.testing.assert_allclose(answer.regions.sum(-1), 1.0, atol=1e-5)
        np.testing.assert_allclose(answer.regions[..., REGIONS.index("image")], answer.image.sum(-1), atol=1e-5)
        assert (answer.regions[0, ..., REGIONS.index("answer")] == 0).all()  # nothing generated yet at token 0
        stats = question_statistics(answer.image, answer.regions, REGIONS, answer_token_rows(answer.token_ids, 2),
                                    Aggregation(range(3), "mean"), 300, 200)
        assert sum(stats[f"{name}_share"] for name in REGIONS) == pytest.approx(1.0, abs=1e-5)
        assert len(stats["visual_ratio"]) == 3
        assert np.mean(stats["visual_ratio"]) == pytest.approx(stats["image_share"], abs=1e-5)


def test_only_the_language_model_is_switched_and_restored(gqa_model):
    model, _ = gqa_model
    text_before = model.config.text_config._attn_implementation
    vision_before = model.config.vision_config._attn_implementation
    layout = prompt_layout(PROMPTS[:1], 576, len(PROMPTS[0]) - 1 + 576)
    collector = AnswerAttentionCollector(layout, num_layers=3, device="cpu")
    with attention_capture(model, collector):
        assert model.config.text_config._attn_implementation == CAPTURE_ATTENTION
        assert model.model.language_model.config._attn_implementation == CAPTURE_ATTENTION
        assert model.config.vision_config._attn_implementation == vision_before
        assert model.model.vision_tower.config._attn_implementation == vision_before
    assert model.config.text_config._attn_implementation == text_before
    assert not any(hasattr(layer.self_attn, "answer_attention_collector")
                   for layer in model.model.language_model.layers)


def test_a_step_without_capture_is_an_error():
    layout = prompt_layout(PROMPTS[:1], 576, len(PROMPTS[0]) - 1 + 576)
    collector = AnswerAttentionCollector(layout, num_layers=3, device="cpu")
    with pytest.raises(RuntimeError, match="sdpa_capture"):
        collector.end_step()
