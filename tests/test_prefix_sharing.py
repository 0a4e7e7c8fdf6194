"""Prefix sharing in stage 1: same answers and samples as without it, in question order."""

import gc
import json

import pytest
import torch

from llava.constants import POPE_ANSWER_SUFFIX
from llava.jsonl_io import read_jsonl
from semantic_entropy import model_vqa_loader as stage1
from semantic_entropy.sampling import stage1 as stage1_library
from semantic_entropy.sampling.prefix_groups import Group, plan_batches
from tests.generation_checks import assert_same_generations

QUESTIONS = [("img_0.png", "Is there a red circle in the image?"), ("img_1.png", "Is there a dog in the imange?"),
             ("img_0.png", "Is there a blue square in the image?"), ("img_2.png", "What colour is the triangle?"),
             ("img_1.png", "Is there a green star in the image?"), ("img_0.png", "Is there a dog in the imange?"),
             ("img_2.png", "Is there a red circle in the image?")]


@pytest.fixture()
def repeated_images(tiny_checkpoints, tmp_path):
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps({"question_id": 500 - i, "image": image, "text": text + POPE_ANSWER_SUFFIX,
                                        "category": "random"}) + "\n" for i, (image, text) in enumerate(QUESTIONS)))
    return path


def _run(tiny, questions, out, *extra):
    stage1.main([
        "--model-path", str(tiny.original), "--question-file", str(questions), "--image-folder", str(tiny.images),
        "--answers-file", str(out / "answers.jsonl"), "--temperature", "0", "--conv-mode", "vicuna_v1",
        "--device", "cpu", "--max_new_tokens", "4", "--num-samples", "5", *extra,
    ])  # fmt: skip
    return read_jsonl(str(out / "answers.jsonl")), read_jsonl(str(out / "answers.generations.jsonl"))


@pytest.mark.parametrize("sharing_args", [[], ["--batch-size", "2", "--images-per-batch", "1"]])
def test_shared_equals_unshared_in_question_order(tiny_checkpoints, repeated_images, tmp_path, sharing_args):
    (tmp_path / "u").mkdir()
    (tmp_path / "s").mkdir()
    answers_u, gens_u = _run(tiny_checkpoints, repeated_images, tmp_path / "u", "--no-prefix-sharing")
    answers_s, gens_s = _run(tiny_checkpoints, repeated_images, tmp_path / "s", *sharing_args)
    expected_ids = [500 - i for i in range(len(QUESTIONS))]
    assert [g["question_id"] for g in gens_s] == expected_ids  # written back in question order
    assert [a["question_id"] for a in answers_s] == expected_ids
    assert_same_generations(gens_u, gens_s)
    assert [a["text"] for a in answers_u] == [a["text"] for a in answers_s]


def test_plan_batches_cuts_large_groups_and_respects_limits():
    def group(image, n):
        return Group(image, [1, -200], [{"question_id": f"{image}{i}"} for i in range(n)], [[5]] * n)

    planned = plan_batches([group("a", 5), group("b", 1), group("c", 2)], max_questions=2, max_images=8)
    assert [[(g.image, len(g.questions)) for g in batch] for batch in planned] == [
        [("a", 2)], [("a", 2)], [("a", 1), ("b", 1)], [("c", 2)]]
    planned = plan_batches([group("a", 1), group("b", 1), group("c", 1)], max_questions=10, max_images=2)
    assert [[g.image for g in batch] for batch in planned] == [["a", "b"], ["c"]]
    with pytest.raises(ValueError):
        plan_batches([group("a", 1)], max_questions=0, max_images=1)


def test_cache_is_freed_between_batches(tiny_checkpoints, repeated_images, tmp_path):
    from transformers import DynamicCache

    from llava.model.builder import load_pretrained_model
    from semantic_entropy.sampling.prefix_groups import group_batches, group_questions
    from semantic_entropy.sampling.sampler import SamplingSettings

    tokenizer, model, processor, _ = load_pretrained_model(str(tiny_checkpoints.original), device="cpu")
    questions = read_jsonl(str(repeated_images))
    planned = plan_batches(group_questions(questions, tokenizer, "vicuna_v1"), max_questions=3, max_images=2)
    settings = SamplingSettings(num_samples=3, max_new_tokens=3)
    alive = []
    for batch in group_batches(planned, str(tiny_checkpoints.images), processor, model.config, 0):
        stage1_library.run_group_batch(model, batch["groups"], batch["pixel_values"], settings, 0, tokenizer.eos_token_id)
        gc.collect()
        alive.append(sum(isinstance(o, DynamicCache) for o in gc.get_objects()))
    assert len(alive) >= 3 and max(alive) == 0
    assert sum(len(g.questions) for batch in planned for g in batch) == len(QUESTIONS)
    assert torch.is_inference_mode_enabled() is False
