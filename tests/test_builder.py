"""load_pretrained_model on tiny random LLaVA-1.5 checkpoints in both layouts."""

import json
import os
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from llava.conversation import build_prompt
from llava.mm_utils import process_images, tokenizer_image_token
from llava.model.builder import load_pretrained_model
from llava.model.checkpoint_files import CheckpointError
from llava.model.generation import greedy_decode


def _prompt_inputs(tokenizer, model, processor, image_path, question):
    image = Image.open(image_path).convert("RGB")
    pixels = process_images([image], processor, model.config)
    ids = tokenizer_image_token(build_prompt(question, "vicuna_v1"), tokenizer, return_tensors="pt")
    return ids, pixels


def _logits_and_greedy(folder, tiny, **kwargs):
    tokenizer, model, processor, context_len = load_pretrained_model(str(folder), device="cpu", **kwargs)
    ids, pixels = _prompt_inputs(tokenizer, model, processor, tiny.images / "img_0.png", "Is there a red circle?")
    embeds, mask, positions = model.embed_multimodal([ids], model.encode_images(pixels))
    with torch.no_grad():
        logits = model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits
    answer = greedy_decode(model, embeds, mask, positions, max_new_tokens=8, eos_token_id=tokenizer.eos_token_id)[0]
    return logits[..., : model.scored_vocab_size], answer, ids, model, context_len


def test_original_layout_loads_the_saved_weights(tiny_checkpoints):
    _, model, processor, _ = load_pretrained_model(str(tiny_checkpoints.original), device="cpu")
    reference = tiny_checkpoints.model.state_dict()
    loaded = model.state_dict()
    assert set(reference) == set(loaded)
    assert all(torch.equal(reference[k], loaded[k]) for k in reference)
    assert model.lm_head.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()  # untied
    assert type(processor).__name__ == "CLIPImageProcessorPil"
    assert model.config.image_aspect_ratio == "pad"


def test_both_layouts_give_identical_logits_and_greedy_answers(tiny_checkpoints):
    logits_o, answer_o, ids_o, model_o, ctx = _logits_and_greedy(tiny_checkpoints.original, tiny_checkpoints)
    logits_h, answer_h, ids_h, model_h, _ = _logits_and_greedy(tiny_checkpoints.hf, tiny_checkpoints)
    assert torch.equal(ids_o, ids_h)
    assert model_h.config.text_config.vocab_size > model_h.scored_vocab_size == model_o.scored_vocab_size
    torch.testing.assert_close(logits_o, logits_h, rtol=0, atol=1e-5)
    assert answer_o.token_ids == answer_h.token_ids
    assert max(answer_h.token_ids) < model_h.scored_vocab_size
    assert ctx == 2048


def test_our_splice_equals_transformers_native_image_path(tiny_checkpoints):
    """Our inputs_embeds path gives the logits of LlavaForConditionalGeneration's own image-token path."""
    tokenizer, model, processor, _ = load_pretrained_model(str(tiny_checkpoints.hf), device="cpu")
    ids, pixels = _prompt_inputs(tokenizer, model, processor, tiny_checkpoints.images / "img_1.png", "Q?")
    embeds, mask, positions = model.embed_multimodal([ids], model.encode_images(pixels))
    slot = ids.tolist().index(-200)
    native_ids = torch.cat([ids[:slot], torch.full((576,), model.config.image_token_id), ids[slot + 1 :]])
    with torch.no_grad():
        ours = model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits
        native = type(model).__mro__[1].forward(model, input_ids=native_ids[None], pixel_values=pixels).logits
    torch.testing.assert_close(ours, native, rtol=0, atol=1e-5)


def test_original_generate_call_shape(tiny_checkpoints):
    tokenizer, model, processor, _ = load_pretrained_model(str(tiny_checkpoints.hf), device="cpu")
    ids, pixels = _prompt_inputs(tokenizer, model, processor, tiny_checkpoints.images / "img_0.png", "Is there a red circle?")
    output_ids = model.generate(ids[None], images=pixels, do_sample=False, max_new_tokens=8)
    _, answer, _, _, _ = _logits_and_greedy(tiny_checkpoints.hf, tiny_checkpoints)
    assert output_ids[0].tolist()[: len(answer.token_ids)] == answer.token_ids


def test_process_images_matches_pil_pipeline_by_hand(tiny_checkpoints):
    _, model, processor, _ = load_pretrained_model(str(tiny_checkpoints.original), device="cpu")
    image = Image.open(tiny_checkpoints.images / "img_1.png").convert("RGB")  # 180 x 260, portrait
    pixels = process_images([image], processor, model.config)
    assert pixels.shape == (1, 3, 336, 336)
    square = Image.new("RGB", (260, 260), (122, 116, 104))
    square.paste(image, ((260 - 180) // 2, 0))
    resized = np.asarray(square.resize((336, 336), Image.BICUBIC), dtype=np.float32) / 255.0
    mean = np.array(processor.image_mean, dtype=np.float32)
    std = np.array(processor.image_std, dtype=np.float32)
    expected = torch.from_numpy(((resized - mean) / std).transpose(2, 0, 1))
    torch.testing.assert_close(pixels[0], expected, rtol=0, atol=1e-5)


def test_vision_tower_override_and_bin_weights(tiny_checkpoints, tmp_path):
    """A CLIP folder elsewhere (--vision-tower) and `.bin` weights load to the same model."""
    folder = tmp_path / "llava-bin"
    shutil.copytree(tiny_checkpoints.original, folder)
    from safetensors.torch import load_file

    state = {}
    for name in os.listdir(folder):
        if name.endswith(".safetensors"):
            state.update(load_file(folder / name))
            os.remove(folder / name)
    os.remove(folder / "model.safetensors.index.json")
    torch.save(state, folder / "pytorch_model.bin")
    config = json.loads((folder / "config.json").read_text())
    config["mm_vision_tower"] = "openai/clip-vit-large-patch14-336"  # a hub id, absent offline
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="clip-vit-large-patch14-336.*--vision-tower"):
        load_pretrained_model(str(folder), device="cpu")
    _, model, _, _ = load_pretrained_model(str(folder), device="cpu", vision_tower=str(tiny_checkpoints.clip))
    reference = tiny_checkpoints.model.state_dict()
    assert all(torch.equal(reference[k], v) for k, v in model.state_dict().items())


def test_missing_shard_names_the_file(tiny_checkpoints, tmp_path):
    folder = tmp_path / "llava-missing"
    shutil.copytree(tiny_checkpoints.original, folder)
    os.remove(folder / "model-00002-of-00002.safetensors")
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors"):
        load_pretrained_model(str(folder), device="cpu")


def _cut_in_half(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


@pytest.mark.parametrize("layout, damaged", [
    ("original", "model-00002-of-00002.safetensors"),  # a shard of the LLaVA folder
    ("clip", "model.safetensors"),                     # the CLIP folder's weights
    ("hf", "model.safetensors"),
])
def test_truncated_safetensors_names_the_file(tiny_checkpoints, tmp_path, layout, damaged):
    folder = tmp_path / layout
    shutil.copytree(getattr(tiny_checkpoints, layout), folder)
    _cut_in_half(folder / damaged)
    kwargs = {"vision_tower": str(folder)} if layout == "clip" else {}
    model_folder = tiny_checkpoints.original if layout == "clip" else folder
    with pytest.raises(CheckpointError) as error:
        load_pretrained_model(str(model_folder), device="cpu", **kwargs)
    assert str(error.value).startswith(f"{folder / damaged}: ")


def test_corrupt_header_and_truncated_bin_name_the_file(tiny_checkpoints, tmp_path):
    clip = tmp_path / "clip-garbage"
    shutil.copytree(tiny_checkpoints.clip, clip)
    (clip / "model.safetensors").write_bytes(b"not a safetensors file" * 10)
    with pytest.raises(CheckpointError, match="^" + re.escape(f"{clip / 'model.safetensors'}: ")):
        load_pretrained_model(str(tiny_checkpoints.original), device="cpu", vision_tower=str(clip))

    bin_clip = tmp_path / "clip-bin"
    shutil.copytree(tiny_checkpoints.clip, bin_clip)
    from safetensors.torch import load_file

    torch.save(load_file(bin_clip / "model.safetensors"), bin_clip / "pytorch_model.bin")
    os.remove(bin_clip / "model.safetensors")
    _cut_in_half(bin_clip / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="^" + re.escape(f"{bin_clip / 'pytorch_model.bin'}: ")):
        load_pretrained_model(str(tiny_checkpoints.original), device="cpu", vision_tower=str(bin_clip))


def test_shape_mismatch_names_file_and_key(tiny_checkpoints, tmp_path):
    clip = tmp_path / "clip-wrong"
    shutil.copytree(tiny_checkpoints.clip, clip)
    from safetensors.torch import load_file, save_file

    state = load_file(clip / "model.safetensors")
    key = "vision_model.post_layernorm.weight"
    state[key] = torch.ones(7)
    save_file(state, clip / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*post_layernorm\.weight.*\(7,\)"):
        load_pretrained_model(str(tiny_checkpoints.original), device="cpu", vision_tower=str(clip))


def test_unknown_layout_and_missing_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="neither"):
        load_pretrained_model(str(tmp_path), device="cpu")
    with pytest.raises(CheckpointError, match="missing file .*config.json"):
        load_pretrained_model(str(tmp_path / "nowhere"), device="cpu")


def test_clip_in_float32_with_half_language_model(tiny_checkpoints):
    _, model, _, _ = load_pretrained_model(
        str(tiny_checkpoints.original), device="cpu", dtype="bfloat16", vision_dtype="float32"
    )
    assert model.vision_dtype == torch.float32 and model.text_dtype == torch.bfloat16
    features = model.encode_images(torch.zeros(1, 3, 336, 336))
    assert features.shape == (1, 576, 64) and features.dtype == torch.bfloat16
