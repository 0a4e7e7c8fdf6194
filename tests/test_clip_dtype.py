"""CLIP's dtype and the image features' dtype flow, on the tiny checkpoints.

LLaVA's evaluation scripts run CLIP in float32 beside a float16 language model: the pixels are
rounded to float16, CLIP casts them to float32, and its features go back to float16 before the
projector. float16 runs on the CPU here, so the language model is float16 as on CUDA.
"""

import json
import shutil

import pytest
import torch

from llava.eval.model_vqa_loader import build_parser
from llava.model.builder import load_pretrained_model

LM = torch.float16


def _random_pixels(seed=0):
    return torch.randn(2, 3, 336, 336, generator=torch.Generator().manual_seed(seed))


def _param_dtypes(module):
    return {p.dtype for p in module.parameters()}


@pytest.fixture(scope="module", params=["float16", "float32"])
def clip_with_config_dtype(request, tiny_checkpoints, tmp_path_factory):
    """A copy of the CLIP folder whose config says `torch_dtype` (float16 or float32)."""
    folder = tmp_path_factory.mktemp("clip") / f"clip-{request.param}"
    shutil.copytree(tiny_checkpoints.clip, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "torch_dtype": request.param}))
    return folder


def test_clip_is_float32_by_default_whatever_its_config_says(tiny_checkpoints, clip_with_config_dtype):
    _, model, _, _ = load_pretrained_model(
        str(tiny_checkpoints.original), device="cpu", dtype="float16", vision_tower=str(clip_with_config_dtype)
    )
    assert _param_dtypes(model.model.vision_tower) == {torch.float32}
    assert _param_dtypes(model.model.language_model) == _param_dtypes(model.model.multi_modal_projector) == {LM}
    # CLIP's weights are the stored float32 ones, not rounded through float16.
    reference = tiny_checkpoints.model.model.vision_tower.state_dict()
    assert all(torch.equal(reference[k], v) for k, v in model.model.vision_tower.state_dict().items())


@pytest.mark.parametrize("vision_dtype, expected", [("float16", torch.float16), ("bfloat16", torch.bfloat16),
                                                    ("auto", LM), (None, LM), ("float32", torch.float32)])
def test_vision_dtype_overrides(tiny_checkpoints, clip_with_config_dtype, vision_dtype, expected):
    _, model, _, _ = load_pretrained_model(str(tiny_checkpoints.original), device="cpu", dtype="float16",
                                           vision_tower=str(clip_with_config_dtype), vision_dtype=vision_dtype)
    assert _param_dtypes(model.model.vision_tower) == {expected}
    assert model.vision_dtype == expected and model.text_dtype == LM


def test_hf_layout_keeps_clip_float32_at_the_files_precision(tiny_checkpoints):
    _, model, _, _ = load_pretrained_model(str(tiny_checkpoints.hf), device="cpu", dtype="float16")
    assert _param_dtypes(model.model.vision_tower) == {torch.float32}
    assert _param_dtypes(model.model.language_model) == {LM}
    reference = tiny_checkpoints.model.model.vision_tower.state_dict()
    assert all(torch.equal(reference[k], v) for k, v in model.model.vision_tower.state_dict().items())


def test_default_dtype_flow_by_hand(tiny_checkpoints):
    """Pixels rounded to the LM dtype, CLIP in float32, features in the LM dtype at the projector."""
    _, model, _, _ = load_pretrained_model(str(tiny_checkpoints.original), device="cpu", dtype="float16")
    pixels = _random_pixels()
    seen = {}
    hooks = [
        model.model.vision_tower.register_forward_pre_hook(
            lambda m, args, kwargs: seen.update(clip_in=(args or (kwargs["pixel_values"],))[0]), with_kwargs=True),
        model.model.multi_modal_projector.register_forward_pre_hook(lambda m, args: seen.update(projector_in=args[0])),
    ]
    try:
        features = model.encode_images(pixels)
    finally:
        for hook in hooks:
            hook.remove()
    assert seen["clip_in"].dtype == torch.float32
    assert torch.equal(seen["clip_in"], pixels.to(LM).float())
    assert not torch.equal(seen["clip_in"], pixels)  # the rounding is visible at these values
    assert seen["projector_in"].dtype == LM and features.dtype == LM

    with torch.no_grad():
        hidden = model.model.vision_tower(pixels.to(LM).float(), output_hidden_states=True).hidden_states[-2]
        expected = model.model.multi_modal_projector(hidden[:, 1:].to(LM))
    assert torch.equal(features, expected)


def test_cli_default_is_float32():
    parser = build_parser()
    required = ["--model-path", "M", "--image-folder", "I", "--question-file", "Q", "--answers-file", "A"]
    assert parser.parse_args(required).vision_dtype == "float32"
    assert parser.parse_args(required + ["--vision-dtype", "auto"]).vision_dtype == "auto"
    assert "default: float32" in " ".join(parser.format_help().split())
