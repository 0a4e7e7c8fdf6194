"""The p(True) pass: LLaVA judging its own greedy answer with the image."""

import json

import pytest
import torch
from PIL import Image

from llava.conversation import build_prompt
from llava.jsonl_io import read_jsonl
from llava.mm_utils import process_images, tokenizer_image_token
from llava.model.builder import load_pretrained_model
from llava.model.generation import StepRunner
from semantic_entropy import compute_se_myself, p_true
from semantic_entropy.probes import p_true as p_true_library
from semantic_entropy.sampling.answer_tokens import yes_no_token_ids
from tests.tiny_stage1 import tiny_stage1


def test_p_true_equals_a_direct_first_token_computation(tiny_checkpoints, tmp_path):
    common, inputs = tiny_stage1(tiny_checkpoints, tmp_path)
    p_true.main([*common, *inputs, "--output-file", str(tmp_path / "g.jsonl"), "--batch-size", "2"])
    records = read_jsonl(str(tmp_path / "g.jsonl"))
    generations = read_jsonl(str(tmp_path / "a.generations.jsonl"))
    assert [r["question_id"] for r in records] == [g["question_id"] for g in generations]
    assert all({k: v for k, v in r.items() if k != "p_true"} == g for r, g in zip(records, generations))

    tokenizer, model, processor, _ = load_pretrained_model(str(tiny_checkpoints.original), device="cpu")
    yes, no = yes_no_token_ids(tokenizer, model.scored_vocab_size)
    record = records[2]
    image = Image.open(tiny_checkpoints.images / record["image"]).convert("RGB")
    text = p_true_library.p_true_question(record["prompt"], record["greedy"]["text"])
    ids = tokenizer_image_token(build_prompt(text, "vicuna_v1"), tokenizer, return_tensors="pt")
    with torch.no_grad():
        inputs = model.embed_multimodal([ids], model.encode_images(process_images([image], processor, model.config)))
        probs = StepRunner(model, *inputs).logits.softmax(-1)[0]
    expected = float(probs[yes].sum() / (probs[yes].sum() + probs[no].sum()))
    assert record["p_true"] == pytest.approx(expected, abs=1e-5)
    assert "Proposed answer: " + record["greedy"]["text"] in text

    assert compute_se_myself.main(["--generations-file", str(tmp_path / "g.jsonl"),
                                   "--output-file", str(tmp_path / "u.jsonl")]) == 0
    scores = read_jsonl(str(tmp_path / "u.jsonl"))
    assert scores[2]["scores"]["p_true"] == pytest.approx(1 - expected, abs=1e-5)
    json.dumps(scores)  # plain JSON
