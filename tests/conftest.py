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
