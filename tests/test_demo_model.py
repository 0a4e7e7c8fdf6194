"""The shipped demo model (a tiny LLaVA-1.5 trained on ShapesPOPE v2 by the four-stage recipe) on the shipped world."""

import json
import os
import pathlib

import pytest
import torch
from PIL import Image

from llava.model.builder import load_pretrained_model
from llava.model.convert import export_hf_layout
from semantic_entropy.demo import recipe
from semantic_entropy.demo import world_check as wc
from semantic_entropy.sampling.answer_tokens import yes_no_token_ids

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
MODEL = REPO_ROOT / recipe.DEFAULT_MODEL_FOLDER
CLIP = REPO_ROOT / recipe.DEFAULT_CLIP_FOLDER
TEST_SET = REPO_ROOT / recipe.DEFAULT_TEST_SET


@pytest.fixture(scope="module")
def shipped():
    """(tokenizer, model, image_processor) of the shipped checkpoint, loaded from another CWD."""
    torch.set_num_threads(1)
    previous = os.getcwd()
    os.chdir("/")  # mm_vision_tower is relative to the model folder, not to the CWD
    try:
        tokenizer, model, processor, _ = load_pretrained_model(str(MODEL), device="cpu")
    finally:
        os.chdir(previous)
    return tokenizer, model, processor


@pytest.fixture(scope="module")
def figures(shipped):
    tokenizer, model, processor = shipped
    runner = wc.Runner(model, tokenizer, processor)
    metadata = json.loads((TEST_SET / "metadata.json").read_text())
    names = sorted(r["image"] for r in metadata["images"])
    features = dict(zip(names, runner.features([Image.open(TEST_SET / "images" / n).convert("RGB") for n in names])))
    fig, answered = wc.pope_figures(runner, str(TEST_SET), features)
    fig["errors"] = wc.error_mix(answered, metadata["question_mechanisms"])
    fig["text_prior"] = wc.text_prior(runner)
    return fig


def test_checkpoint_is_the_original_layout_and_small():
    config = json.loads((MODEL / "config.json").read_text())
    assert config["model_type"] == "llava" and config["mm_projector_type"] == "mlp2x_gelu"
    assert config["mm_vision_select_layer"] == -2 and config["image_aspect_ratio"] == "pad"
    assert (MODEL / config["mm_vision_tower"]).resolve() == CLIP.resolve()
    assert (CLIP / "preprocessor_config.json").exists()
    clip = json.loads((CLIP / "config.json").read_text())
    assert clip["image_size"] // clip["patch_size"] == 24  # the real 24x24 patch grid
    size = sum(f.stat().st_size for folder in (MODEL, CLIP) for f in folder.iterdir())
    assert size <= 20 * 2**20


def test_tokenizer_loads_offline_and_has_yes_no_tokens():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(MODEL), local_files_only=True)
    yes, no = yes_no_token_ids(tokenizer)
    assert "▁Yes" in tokenizer.convert_ids_to_tokens(yes) and "▁No" in tokenizer.convert_ids_to_tokens(no)
    assert tokenizer.bos_token_id == 1 and tokenizer.eos_token_id == 2


def first_token_logits(model, tokenizer, processor, questions):
    runner = wc.Runner(model, tokenizer, processor)
    images = [Image.open(TEST_SET / "images" / q["image"]).convert("RGB") for q in questions]
    ids = [runner.ids(q["text"], True) for q in questions]
    with torch.no_grad():
        embeds, mask, positions = model.embed_multimodal(ids, runner.features(images))
        return model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, logits_to_keep=1).logits[:, -1]


def test_hf_export_gives_the_same_first_token_logits(shipped, tmp_path):
    tokenizer, model, processor = shipped
    questions = [json.loads(line) for line in (TEST_SET / "llava_pope_test.jsonl").read_text().splitlines()[:4]]
    tok2, model2, proc2, _ = load_pretrained_model(str(MODEL), device="cpu")
    export_hf_layout(model2, tok2, proc2, str(tmp_path / "hf"))
    tok3, model3, proc3, _ = load_pretrained_model(str(tmp_path / "hf"), device="cpu")
    original = first_token_logits(model, tokenizer, processor, questions)
    hf = first_token_logits(model3, tok3, proc3, questions)
    vocab = model.scored_vocab_size
    torch.testing.assert_close(hf[:, :vocab], original, rtol=0, atol=1e-5)


def test_pope_figures_on_the_shipped_world(figures):
    """The world's acceptance bands (docs/world.md) on all 500 images of the shipped world; measured:
    accuracy 0.844 / 0.866 / 0.897, recall 0.833, yes-rate 0.489 / 0.468 / 0.436 (adversarial, popular, random)."""
    acc, recall, yes = figures["accuracy"], figures["recall"], figures["yes_rate"]
    assert all(0.80 <= acc[s] <= 0.90 for s in acc)
    assert acc["adversarial"] < acc["popular"] < acc["random"]
    assert all(0.70 <= recall[s] <= 0.85 for s in recall)
    assert all(yes[s] < 0.5 for s in yes)
    assert figures["errors"]["adversarial_prior_false_yes_share"] >= 0.3
    assert figures["errors"]["miss_share_of_all_errors"] >= 0.3


def test_the_prior_lives_in_the_language_model(figures):
    assert figures["text_prior"]["gap"] >= 0.3
