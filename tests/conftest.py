"""Shared fixtures. Data beside the checkout (`../shared/data`) is optional: tests skip without it."""

import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_dir() -> pathlib.Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent (only present beside the project's own checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def pope_coco_dir(shared_data_dir) -> pathlib.Path:
    path = shared_data_dir / "pope_coco"
    if not (path / "coco_pope_random.json").exists():
        pytest.skip(f"{path} lacks the POPE label files")
    return path


@pytest.fixture(scope="session")
def llama2_tokenizer_dir(shared_data_dir, tmp_path_factory) -> pathlib.Path:
    """A folder that AutoTokenizer loads: the shared Llama-2 tokenizer.model plus a tokenizer_config."""
    model_file = shared_data_dir / "llama2_tokenizer" / "tokenizer.model"
    if not model_file.exists():
        pytest.skip(f"{model_file} is absent")
    folder = tmp_path_factory.mktemp("llama2_tokenizer")
    os.symlink(model_file, folder / "tokenizer.model")
    (folder / "tokenizer_config.json").write_text(
        '{"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", '
        '"unk_token": "<unk>", "add_bos_token": true, "legacy": true}'
    )
    return folder


QUESTIONS = [
    "Is there a red circle in the image?",
    "Is there a blue square in the image?",
    "Is there a dog in the imange?",
    "What colour is the triangle?",
    "Is there a green star in the image?",
]


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """A random tiny LLaVA-1.5 in the original layout (sharded, separate CLIP folder) and llava-hf layout,
    plus five non-square images and a POPE-style question file."""
    import json
    from types import SimpleNamespace

    import numpy as np
    from PIL import Image

    from llava.constants import POPE_ANSWER_SUFFIX
    from llava.model.builder import load_pretrained_model
    from llava.model.convert import export_hf_layout
    from llava.model.tiny import (build_tokenizer, prompt_corpus, random_tiny_llava, save_original_layout,
                                  tiny_clip_config, tiny_text_config)

    root = tmp_path_factory.mktemp("tiny_llava")
    tokenizer = build_tokenizer(prompt_corpus(QUESTIONS), vocab_size=300)
    text_config, clip_config = tiny_text_config(len(tokenizer)), tiny_clip_config()
    model = random_tiny_llava(text_config, clip_config, seed=0)
    original, clip = root / "llava-tiny", root / "clip-tiny"
    save_original_layout(model, tokenizer, text_config, clip_config, str(original), str(clip), shards=2)
    tok, loaded, processor, _ = load_pretrained_model(str(original), device="cpu")
    hf = root / "llava-tiny-hf"
    export_hf_layout(loaded, tok, processor, str(hf))

    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    records = []
    for i, question in enumerate(QUESTIONS):
        size = (300, 200) if i % 2 == 0 else (180, 260)
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"img_{i}.png")
        records.append({"question_id": 100 + i, "image": f"img_{i}.png", "text": question + POPE_ANSWER_SUFFIX,
                        "category": "random"})
    question_file = root / "questions.jsonl"
    question_file.write_text("".join(json.dumps(r) + "\n" for r in records))
    return SimpleNamespace(root=root, original=original, clip=clip, hf=hf, images=images,
                           question_file=question_file, text_config=text_config, clip_config=clip_config,
                           model=model, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module of the results page (its tests skip without Chromium)."""
    from semantic_entropy.browser.headless import HeadlessChromium

    with HeadlessChromium() as chromium:
        yield chromium
