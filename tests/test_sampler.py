"""Stage-1 sampler: exactness of the grouped multinomial sampling, determinism, log-probs, CLI."""

import math
import shutil

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from llava.conversation import build_prompt
from llava.eval import model_vqa_loader as llava_loader
from llava.jsonl_io import read_jsonl
from llava.mm_utils import process_images, tokenizer_image_token
from llava.model.builder import load_pretrained_model
from llava.model.generation import StepRunner
from semantic_entropy import model_vqa_loader as stage1
from semantic_entropy.sampling.answer_tokens import yes_no_token_ids
from semantic_entropy.sampling.sampler import SamplingSettings, draw_tokens, sample_batch, sampling_logits
from tests.generation_checks import assert_same_generations


@pytest.fixture(scope="module")
def loaded(tiny_checkpoints):
    tokenizer, model, processor, _ = load_pretrained_model(str(tiny_checkpoints.original), device="cpu")
    from PIL import Image

    image = Image.open(tiny_checkpoints.images / "img_0.png").convert("RGB")
    pixels = process_images([image], processor, model.config)
    ids = tokenizer_image_token(build_prompt("Is there a red circle?", "vicuna_v1"), tokenizer, return_tensors="pt")
    embeds, mask, positions = model.embed_multimodal([ids], model.encode_images(pixels))
    return tokenizer, model, (embeds, mask, positions)


def _exact_distribution(model, inputs, settings, eos):
    """P(sequence) for all sequences of at most 2 tokens under top-k filtering, by teacher forcing."""
    runner = StepRunner(model, *inputs)
    first = sampling_logits(runner.logits, settings).double().softmax(-1)[0]
    exact = {}
    for t1 in first.nonzero().flatten().tolist():
        if t1 == eos:
            exact[(t1,)] = first[t1].item()
            continue
        branch = StepRunner(model, *inputs)
        second = sampling_logits(branch.step(torch.tensor([t1])), settings).double().softmax(-1)[0]
        for t2 in second.nonzero().flatten().tolist():
            exact[(t1, t2)] = first[t1].item() * second[t2].item()
    return exact


def _chi_square_p(counts: dict, exact: dict) -> float:
    keys = sorted(exact, key=lambda k: -exact[k])
    total = sum(counts.values())
    observed, expected = [], []
    rest_o = rest_e = 0.0
    for key in keys:  # merge bins with expected count < 5 into one
        e = exact[key] * total
        if e >= 5:
            observed.append(counts.get(key, 0))
            expected.append(e)
        else:
            rest_o += counts.get(key, 0)
            rest_e += e
    if rest_e > 0:
        observed.append(rest_o)
        expected.append(rest_e)
    assert sum(counts.get(k, 0) for k in exact) == total  # nothing drawn outside the support
    return chisquare(observed, np.array(expected) * total / sum(expected)).pvalue


ENGINES = ["tree", "rows"]  # the tree sampler alone; the row decoder from the first fed token on


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("top_k,temperature", [(3, 1.0), (4, 2.0)])
def test_samples_follow_the_exact_sequence_distribution(loaded, top_k, temperature, engine):
    tokenizer, model, inputs = loaded
    eos = tokenizer.eos_token_id
    settings = SamplingSettings(num_samples=4000, temperature=temperature, top_k=top_k, max_new_tokens=2)
    exact = _exact_distribution(model, inputs, settings, eos)
    assert math.isclose(sum(exact.values()), 1.0, rel_tol=1e-9)
    result = sample_batch(model, *inputs, [torch.Generator().manual_seed(7)], settings, eos, engine=engine)[0]
    counts = {}
    for sample in result.samples:
        counts[tuple(sample.token_ids)] = counts.get(tuple(sample.token_ids), 0) + 1
    assert len(result.samples) == 4000
    assert result.distinct_answers == len(counts) <= len(exact)
    assert _chi_square_p(counts, exact) > 1e-3


@pytest.mark.parametrize("engine", ENGINES)
def test_full_multinomial_first_token(loaded, engine):
    """No filtering: the first token's empirical distribution matches softmax(logits / T) over the vocabulary."""
    tokenizer, model, inputs = loaded
    settings = SamplingSettings(num_samples=5000, temperature=1.5, max_new_tokens=1)
    probs = (StepRunner(model, *inputs).logits[0] / 1.5).double().softmax(-1)
    result = sample_batch(model, *inputs, [torch.Generator().manual_seed(3)], settings, tokenizer.eos_token_id,
                          engine=engine)[0]
    counts = {}
    for sample in result.samples:
        counts[tuple(sample.token_ids)] = counts.get(tuple(sample.token_ids), 0) + 1
    exact = {(t,): p for t, p in enumerate(probs.tolist()) if p > 0}
    assert len(counts) > 10
    assert _chi_square_p(counts, exact) > 1e-3


@pytest.mark.parametrize("engine", ENGINES)
def test_logprobs_equal_a_teacher_forced_forward_pass(loaded, engine):
    tokenizer, model, (embeds, mask, positions) = loaded
    settings = SamplingSettings(num_samples=5, temperature=1.0, max_new_tokens=5)
    result = sample_batch(model, embeds, mask, positions, [torch.Generator().manual_seed(0)], settings,
                          tokenizer.eos_token_id, engine=engine)[0]
    for answer in [result.greedy, *result.samples]:
        ids = torch.tensor(answer.token_ids)
        full = torch.cat([embeds[0], model.get_input_embeddings()(ids)], dim=0)[None]
        with torch.no_grad():
            logits = model(inputs_embeds=full).logits[0, embeds.shape[1] - 1 : -1].float()  # (n, V)
        logprobs = torch.log_softmax(logits, -1)
        expected = logprobs.gather(1, ids[:, None])[:, 0]
        torch.testing.assert_close(torch.tensor(answer.token_logprobs), expected, atol=1e-5, rtol=0)
        entropies = -(logprobs.exp() * logprobs).sum(-1)
        torch.testing.assert_close(torch.tensor(answer.token_entropies), entropies, atol=1e-4, rtol=0)


@pytest.mark.parametrize("engine", ENGINES)
def test_top_k_one_and_tiny_top_p_give_the_greedy_answer(loaded, engine):
    tokenizer, model, inputs = loaded
    for settings in (SamplingSettings(num_samples=6, top_k=1, max_new_tokens=4),
                     SamplingSettings(num_samples=6, top_p=1e-9, max_new_tokens=4)):
        result = sample_batch(model, *inputs, [torch.Generator().manual_seed(1)], settings, tokenizer.eos_token_id,
                              engine=engine)[0]
        assert all(s.token_ids == result.greedy.token_ids for s in result.samples)
        assert result.distinct_answers == 1


def test_filters_by_hand():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    # softmax = [0.644, 0.237, 0.087, 0.032]: mass before token 3 is 0.968 >= 0.9, so it goes.
    kept = sampling_logits(logits, SamplingSettings(top_p=0.9)).isfinite().tolist()[0]
    assert kept == [True, True, True, False]
    kept = sampling_logits(logits, SamplingSettings(top_p=0.7)).isfinite().tolist()[0]
    assert kept == [True, True, False, False]
    kept = sampling_logits(logits, SamplingSettings(top_k=2)).isfinite().tolist()[0]
    assert kept == [True, True, False, False]
    halved = sampling_logits(logits, SamplingSettings(temperature=2.0))
    assert torch.equal(halved, logits / 2)
    with pytest.raises(ValueError, match="never silently greedy"):
        SamplingSettings(temperature=0.0)


def test_inverse_cdf_draws_by_hand():
    cdf = torch.tensor([[0.5, 0.75, 1.0]], dtype=torch.float64)
    draws = draw_tokens(cdf, torch.zeros(5, dtype=torch.long), torch.tensor([0.0, 0.49, 0.5, 0.8, 0.999999],
                                                                            dtype=torch.float64))
    assert draws.tolist() == [0, 0, 1, 2, 2]


def test_first_token_yes_no_ids_from_the_vocabulary(tiny_checkpoints, llama2_tokenizer_dir):
    from transformers import AutoTokenizer

    yes, no = yes_no_token_ids(AutoTokenizer.from_pretrained(llama2_tokenizer_dir))
    assert {3869, 4874}.issubset(yes) and {1939, 694}.issubset(no)
    assert not set(yes) & set(no)


def _stage1(tiny, tmp_path, name, *extra):
    answers = tmp_path / f"{name}.jsonl"
    stage1.main([
        "--model-path", str(tiny.original), "--question-file", str(tiny.question_file),
        "--image-folder", str(tiny.images), "--answers-file", str(answers), "--temperature", "0",
        "--conv-mode", "vicuna_v1", "--device", "cpu", "--max_new_tokens", "5", "--num-samples", "6", *extra,
    ])  # fmt: skip
    return read_jsonl(str(answers)), read_jsonl(str(tmp_path / f"{name}.generations.jsonl"))


def test_stage1_greedy_equals_llava_greedy_and_batching_is_invisible(tiny_checkpoints, tmp_path):
    answers1, gens1 = _stage1(tiny_checkpoints, tmp_path, "bs1", "--batch-size", "1")
    answers4, gens4 = _stage1(tiny_checkpoints, tmp_path, "bs4", "--batch-size", "4")
    llava_loader.main([
        "--model-path", str(tiny_checkpoints.original), "--question-file", str(tiny_checkpoints.question_file),
        "--image-folder", str(tiny_checkpoints.images), "--answers-file", str(tmp_path / "llava.jsonl"),
        "--temperature", "0", "--conv-mode", "vicuna_v1", "--device", "cpu", "--max_new_tokens", "5",
    ])  # fmt: skip
    greedy = [r["text"] for r in read_jsonl(str(tmp_path / "llava.jsonl"))]
    assert [r["text"] for r in answers1] == greedy == [g["greedy"]["text"] for g in gens1]
    assert_same_generations(gens1, gens4)
    record = gens1[0]
    assert len(record["samples"]) == 6 and record["sampling"]["temperature"] == 1.0  # --temperature 0 still samples
    assert len({tuple(s["token_ids"]) for s in record["samples"]}) > 1
    assert 0 < record["first_token"]["yes_mass"] + record["first_token"]["no_mass"] <= 1
    assert list(answers1[0]) == ["question_id", "prompt", "text", "answer_id", "model_id", "metadata"]


def test_stage1_resumes_without_duplicates(tiny_checkpoints, tmp_path):
    _, full = _stage1(tiny_checkpoints, tmp_path, "full")
    gens = tmp_path / "part.generations.jsonl"
    lines = (tmp_path / "full.generations.jsonl").read_text().splitlines(keepends=True)
    gens.write_text(lines[0] + lines[1] + lines[2][:50])  # crash mid-record; answers file not yet written
    shutil.copy(tmp_path / "full.generations.jsonl.manifest.json", tmp_path / "part.generations.jsonl.manifest.json")
    answers, resumed = _stage1(tiny_checkpoints, tmp_path, "part")
    assert [g["question_id"] for g in resumed] == [g["question_id"] for g in full]
    assert_same_generations(resumed, full)
    assert sorted(a["question_id"] for a in answers) == [g["question_id"] for g in full]  # backfilled once
