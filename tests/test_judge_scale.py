"""Judges at scale: the verdict cache (judge identity + exact input), prefetching across
questions, length-sorted padded batches equal to one pair at a time, the greedy reply loop
equal to `generate`, and LLaVA's language model as the LLM judge (from its folder, or sharing
the tensors of a LLaVA model already loaded)."""

import json

import numpy as np
import pytest
import torch

from semantic_entropy.demo.tiny_models import save_tiny_causal_lm
from semantic_entropy.scoring.judge_batches import greedy_replies, length_sorted_batches
from semantic_entropy.scoring.judge_cache import JudgeCache
from semantic_entropy.scoring.judges import (
    ENTAILMENT,
    ENTAILMENT_PROMPT,
    NEUTRAL,
    LLMJudge,
    NLIJudge,
    PairwiseJudge,
    build_judge,
    ordered_pairs,
)

QUESTION = "Is there a dog in the image?"


class CountingJudge(PairwiseJudge):
    """Stub model: 'entailment' when both texts share their first word; records every call."""

    name = "stub"

    def __init__(self, model_path="stub-a", **kwargs):
        super().__init__(**kwargs)
        self.model_path = model_path
        self.calls: list[list] = []

    def _model_input(self, question, premise, hypothesis):
        return question, premise, hypothesis

    def _predict(self, model_inputs):
        self.calls.append(list(model_inputs))
        probs = np.full((len(model_inputs), 3), 0.1)
        for row, (_, a, b) in enumerate(model_inputs):
            probs[row, ENTAILMENT if a.split()[0] == b.split()[0] else NEUTRAL] = 0.8
        return probs

    def describe(self):
        return {**super().describe(), "model_path": self.model_path}


def test_repeated_pairs_across_questions_are_judged_once():
    judge = CountingJudge()
    # q1: 3 distinct texts -> 6 ordered pairs; q2: the same question and two of q1's texts
    # (2 pairs, both cached) plus a new one (4 new pairs); q3: another question, same texts as q1
    # (6 pairs, none cached: the question is part of the input).
    judge.judge(QUESTION, ["yes a", "no b", "yes a"], "yes c")
    judge.judge(QUESTION, ["no b", "yes c", "maybe"])
    judge.judge("Is there a cat?", ["yes a", "no b"], "yes c")
    assert judge.cache_stats() == {"pairs_judged": 6 + 6 + 6, "model_inputs": 6 + 4 + 6,
                                   "cache_hit_rate": pytest.approx(2 / 18)}


def test_cache_is_keyed_on_judge_identity_and_can_be_shared():
    shared = JudgeCache()
    first, same_model, other_model = (CountingJudge("m1", cache=shared), CountingJudge("m1", cache=shared),
                                      CountingJudge("m2", cache=shared))
    texts = ["yes a", "no b"]
    first.judge(QUESTION, texts)
    same_model.judge(QUESTION, texts)
    other_model.judge(QUESTION, texts)
    assert (first.num_model_inputs, same_model.num_model_inputs, other_model.num_model_inputs) == (2, 0, 2)
    assert len(shared) == 4


def test_cache_eviction_keeps_results_right():
    judge = CountingJudge(cache_size=1)  # smaller than one question's pairs
    reference = CountingJudge()
    for texts in (["yes a", "yes b", "no c"], ["no c", "yes a", "maybe d"]):
        judge.prefetch([(QUESTION, texts, None)])
        assert judge.judge(QUESTION, texts, need_similarity=True).sample_cluster_ids == \
            reference.judge(QUESTION, texts).sample_cluster_ids
    with pytest.raises(ValueError, match="at least one"):
        JudgeCache(0)


def test_prefetch_judges_a_window_in_one_model_call_and_changes_nothing():
    items = [(QUESTION, ["yes a", "no b", "yes c"], "no d"), (QUESTION, ["no b", "maybe"], None),
             ("Is there a cat?", ["yes a", "yes a"], "yes a")]
    plain, prefetched = CountingJudge(), CountingJudge()
    prefetched.prefetch(items)
    assert len(prefetched.calls) == 1
    assert len(prefetched.calls[0]) == 12 + 2  # 4 texts -> 12 pairs; (no b, maybe) both ways; q3 none
    for question, samples, greedy in items:
        a = plain.judge(question, samples, greedy, need_similarity=True)
        b = prefetched.judge(question, samples, greedy, need_similarity=True)
        assert (a.sample_cluster_ids, a.greedy_cluster_id) == (b.sample_cluster_ids, b.greedy_cluster_id)
        assert np.array_equal(a.similarity, b.similarity)
    assert len(prefetched.calls) == 1  # judge() found everything in the cache
    assert plain.cache_stats() == prefetched.cache_stats()


def test_length_sorted_batches():
    assert length_sorted_batches([2, 7, 7, 1, 4], 2) == [[1, 2], [4, 0], [3]]
    assert length_sorted_batches([], 4) == []
    with pytest.raises(ValueError):
        length_sorted_batches([1], 0)


# ------------------------------------------------------------------ real models, random weights


@pytest.fixture(scope="module")
def word_tokenizer_folder(tmp_path_factory):
    """A word-level tokenizer folder (tiny_models' vocabulary), for random models of that vocabulary."""
    return save_tiny_causal_lm(str(tmp_path_factory.mktemp("words") / "lm"), "entailment")


def random_nli_model(vocab_size):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(1)
    config = BertConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=128, pad_token_id=0, initializer_range=0.5,
                        id2label={0: "contradiction", 1: "neutral", 2: "entailment"})
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.normal_(0.0, 5.0)  # verdicts that depend on the input
    return model


def test_nli_length_sorted_batches_equal_one_pair_at_a_time(word_tokenizer_folder):
    from semantic_entropy.demo.tiny_models import _word_level_tokenizer

    tokenizer, vocabulary = _word_level_tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]"], pair_template=True)
    model = random_nli_model(len(vocabulary))
    judge = NLIJudge(model, tokenizer, batch_size=3)
    pairs = [("yes", "no"), ("a red dog is in the image", "no"), ("it is a blue car", "yes it is"),
             ("no", "there is not a dog in the image"), ("the cat", "a dog on the car")]
    batched = judge.label_probs(QUESTION, pairs)
    for (a, b), probs in zip(pairs, batched):
        encoded = tokenizer(f"{QUESTION} {a}", f"{QUESTION} {b}", return_tensors="pt")
        with torch.no_grad():
            alone = torch.softmax(model(**encoded).logits, -1)[0].numpy()  # (3,) in id2label order = LABELS
        np.testing.assert_allclose(probs, alone, atol=1e-5)
    assert np.ptp(batched, axis=0).max() > 0.05  # the inputs matter: a real check


def random_causal_lm(vocab_size, seed=2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                         pad_token_id=0, bos_token_id=2, eos_token_id=3, tie_word_embeddings=False)
    config._attn_implementation = "sdpa"
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(40)  # peaked next-token choices: far from ties
    return model


def test_greedy_replies_equal_generate_one_prompt_at_a_time(word_tokenizer_folder):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(word_tokenizer_folder)
    model = random_causal_lm(len(tokenizer))
    prompts = ["is there a dog", "what is on the car in the image ?", "red", "the cat is not blue , it is red ."]
    token_lists = [tokenizer(p)["input_ids"] for p in prompts]
    batched = greedy_replies(model, token_lists, pad_id=0, eos_id=3, max_new_tokens=6)
    for tokens, reply in zip(token_lists, batched):
        with torch.no_grad():
            out = model.generate(torch.tensor([tokens]), attention_mask=torch.ones(1, len(tokens), dtype=torch.long),
                                 max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=3)
        expected = out[0, len(tokens):].tolist()
        if 3 in expected:
            expected = expected[: expected.index(3) + 1]
        assert reply == expected
    assert len({tuple(r) for r in batched}) > 1


def test_llm_judge_batches_equal_one_at_a_time_and_stop_when_settled(word_tokenizer_folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(word_tokenizer_folder)
    model = random_causal_lm(len(tokenizer), seed=5)
    samples, greedy = ["yes", "no", "a dog", "it is red"], "not a cat"
    one_by_one = LLMJudge(model, tokenizer, batch_size=1, max_new_tokens=5)
    batched = LLMJudge(model, tokenizer, batch_size=4, max_new_tokens=5)
    batched.prefetch([(QUESTION, samples, greedy)])
    assert batched.judge(QUESTION, samples, greedy, need_similarity=True).similarity.tolist() == \
        one_by_one.judge(QUESTION, samples, greedy, need_similarity=True).similarity.tolist()
    assert batched.last_replies == one_by_one.last_replies  # the same 20 replies, in pair order

    # The rigged model answers "entailment" at once: one forward pass per batch, not five.
    rigged = LLMJudge(AutoModelForCausalLM.from_pretrained(word_tokenizer_folder), tokenizer, batch_size=4,
                      max_new_tokens=5)
    calls = []
    rigged.model.register_forward_hook(lambda *_: calls.append(1))
    rigged.prefetch([(QUESTION, samples, greedy)])  # 20 pairs: 5 batches
    assert len(calls) == 5 and set(rigged.last_replies) == {"entailment"}


def test_reply_parse_equal_with_and_without_early_stop(word_tokenizer_folder):
    from transformers import AutoTokenizer

    from semantic_entropy.scoring.judges import parse_entailment_reply, reply_settled

    tokenizer = AutoTokenizer.from_pretrained(word_tokenizer_folder)
    model = random_causal_lm(len(tokenizer), seed=7)
    with torch.no_grad():  # make label words likely, so that some replies settle early
        for word in ("entailment", "neutral", "contradiction"):
            model.lm_head.weight[tokenizer.convert_tokens_to_ids(word)] *= 1.5
    prompts = [ENTAILMENT_PROMPT.format(question=QUESTION, a=a, b=b) for a, b in ordered_pairs(["yes", "no", "red"])]
    token_lists = [tokenizer(p)["input_ids"] for p in prompts]
    settle = lambda ids: reply_settled(tokenizer.decode(ids, skip_special_tokens=True))  # noqa: E731
    full = greedy_replies(model, token_lists, pad_id=0, eos_id=3, max_new_tokens=8)
    early = greedy_replies(model, token_lists, pad_id=0, eos_id=3, max_new_tokens=8, is_settled=settle)
    for a, b in zip(full, early):
        assert b == a[: len(b)]
        assert parse_entailment_reply(tokenizer.decode(a, skip_special_tokens=True)) == \
            parse_entailment_reply(tokenizer.decode(b, skip_special_tokens=True))
    assert any(len(b) < len(a) for a, b in zip(full, early))  # some replies did stop early


# ------------------------------------------------------------------ LLaVA's language model as the judge


def test_llava_folder_loads_only_its_language_model(tiny_checkpoints):
    from transformers import LlamaForCausalLM

    from llava.model.builder import load_pretrained_model

    judge = build_judge("llm", model_path=str(tiny_checkpoints.original), device="cpu", batch_size=4)
    assert type(judge.model) is LlamaForCausalLM
    names = [name for name, _ in judge.model.named_parameters()]
    assert not [n for n in names if "vision" in n or "projector" in n]
    assert judge.describe()["prompt_format"] == "llava_vicuna_v1"

    _, llava, _, _ = load_pretrained_model(str(tiny_checkpoints.original), device="cpu")
    reference = dict(llava.model.language_model.named_parameters(prefix="model"))
    reference["lm_head.weight"] = llava.lm_head.weight
    for name, tensor in judge.model.named_parameters():
        assert torch.equal(tensor, reference[name]), name
    assert len(names) == len(reference)


def test_llava_model_in_memory_is_the_judge_without_a_copy(tiny_checkpoints):
    from llava.model.builder import load_pretrained_model

    tokenizer, llava, _, _ = load_pretrained_model(str(tiny_checkpoints.original), device="cpu")
    judge = LLMJudge.from_llava(llava, tokenizer, batch_size=4, max_new_tokens=4)
    llava_storage = {p.data_ptr() for p in llava.parameters()}
    judge_params = list(judge.model.parameters())
    assert judge_params and all(p.data_ptr() in llava_storage for p in judge_params)
    assert judge.model.lm_head.weight is llava.lm_head.weight
    assert judge.model.model.layers[0].self_attn.q_proj.weight is \
        llava.model.language_model.layers[0].self_attn.q_proj.weight

    # Same weights, same prompt format: the same verdicts as the judge loaded from the folder.
    from_folder = build_judge("llm", model_path=str(tiny_checkpoints.original), device="cpu", batch_size=4)
    from_folder.max_new_tokens = 4
    samples = ["Yes", "No", "a red circle"]
    assert judge.judge(QUESTION, samples, need_similarity=True).similarity.tolist() == \
        from_folder.judge(QUESTION, samples, need_similarity=True).similarity.tolist()
    assert judge.last_replies == from_folder.last_replies
    assert judge.identity() != from_folder.identity()  # one in memory, one from a path


def test_llava_folder_judge_needs_no_clip(tiny_checkpoints, tmp_path):
    import shutil

    folder = tmp_path / "llava-no-clip"
    shutil.copytree(tiny_checkpoints.original, folder)
    config = json.loads((folder / "config.json").read_text())
    config["mm_vision_tower"] = str(tmp_path / "absent-clip")  # the vision tower is never read
    (folder / "config.json").write_text(json.dumps(config))
    judge = build_judge("llm", model_path=str(folder), device="cpu", batch_size=4)
    original = build_judge("llm", model_path=str(tiny_checkpoints.original), device="cpu", batch_size=4)
    samples = ["Yes", "No", "a red circle"]
    assert judge.judge(QUESTION, samples, need_similarity=True).similarity.tolist() == \
        original.judge(QUESTION, samples, need_similarity=True).similarity.tolist()
    assert judge.last_replies == original.last_replies and len(judge.last_replies) == 6


def test_llava_hf_folder_and_chat_template_are_refused(tiny_checkpoints):
    with pytest.raises(ValueError, match="llava-hf"):
        build_judge("llm", model_path=str(tiny_checkpoints.hf), device="cpu")
    with pytest.raises(ValueError, match="drop --judge-chat-template"):
        build_judge("llm", model_path=str(tiny_checkpoints.original), use_chat_template=True)


def test_stage2_with_the_llava_folder_judge(tiny_checkpoints, tmp_path):
    from llava.jsonl_io import read_jsonl
    from semantic_entropy.compute_se_myself import main

    def answer(text):
        return {"text": text, "token_ids": [5, 2], "token_logprobs": [-0.5, -0.1], "token_entropies": [0.3, 0.1],
                "ends_with_eos": True}

    records = [{"question_id": i, "category": None, "image": "x.png", "prompt": "Describe the image.",
                "greedy": answer("A red circle."), "samples": [answer(t) for t in texts],
                "sampling": {"num_samples": 3, "temperature": 1.0, "top_p": None, "top_k": None, "seed": 0,
                             "question_seed": i, "max_new_tokens": 32}, "model_id": "tiny"}
               for i, texts in enumerate([["A red circle.", "A blue square.", "Nothing."],
                                          ["A blue square.", "A blue square.", "A red circle."]])]
    generations = tmp_path / "g.jsonl"
    generations.write_text("".join(json.dumps(r) + "\n" for r in records))
    outputs = {}
    for window in (1, 64):
        out = tmp_path / f"u{window}.jsonl"
        assert main(["--generations-file", str(generations), "--output-file", str(out), "--judge", "llm",
                     "--judge-model", str(tiny_checkpoints.original), "--device", "cpu",
                     "--judge-window", str(window), "--batch-size", "4"]) == 0
        outputs[window] = [{k: v for k, v in r.items()} for r in read_jsonl(str(out))]
        manifest = json.loads((tmp_path / f"u{window}.jsonl.manifest.json").read_text())
        assert manifest["details"]["judge"]["prompt_format"] == "llava_vicuna_v1"
        assert manifest["execution"]["judge_window"] == window
        # q0: 3 distinct texts (the greedy is a sample): 6 pairs; q1: 2 distinct texts, whose 2
        # pairs q0 already asked (same question): 8 pairs judged, 6 sent to the model.
        assert manifest["details"]["judge_cache"] == {"pairs_judged": 8, "model_inputs": 6,
                                                      "cache_hit_rate": 0.25}
    assert outputs[1] == outputs[64]


def test_bench_judges_tiny_smoke(tmp_path):
    import os
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    out = tmp_path / "judges.json"
    subprocess.run([sys.executable, str(root / "scripts" / "bench_judges.py"), "--tiny", "--device", "cpu",
                    "--questions", "3", "--output-json", str(out)], check=True, capture_output=True, text=True,
                   env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}, timeout=300)
    report = json.loads(out.read_text())
    for judge in ("nli", "llm"):
        # 3 questions x 11 distinct answers: 110 ordered pairs each, all judged now and before.
        assert report[judge]["pairs_judged"] == report[f"{judge}_before"]["pairs_judged"] == 330
        assert report[judge]["questions_done"] == 3
        agreement = report[f"{judge}_before"][f"agreement_with_{judge}"]
        assert agreement["inputs_compared"] == report[judge]["model_inputs"]
        assert agreement["same_label"] == 1.0  # float32 on the CPU: the same verdicts either way


def test_a_batch_out_of_device_memory_is_retried_in_halves(word_tokenizer_folder):
    from semantic_entropy.demo.tiny_models import _word_level_tokenizer

    tokenizer, vocabulary = _word_level_tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]"], pair_template=True)
    model = random_nli_model(len(vocabulary))
    pairs = [("yes", "no"), ("a red dog", "no"), ("it is a blue car", "yes it is"), ("no", "the cat"),
             ("the cat", "a dog on the car")]
    expected = NLIJudge(model, tokenizer, batch_size=8).label_probs(QUESTION, pairs)

    forward = model.forward
    tried, ran = [], []

    def small_device(**inputs):
        tried.append(inputs["input_ids"].shape[0])
        if inputs["input_ids"].shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        ran.append(inputs["input_ids"].shape[0])
        return forward(**inputs)

    model.forward = small_device
    got = NLIJudge(model, tokenizer, batch_size=8).label_probs(QUESTION, pairs)
    np.testing.assert_allclose(got, expected, atol=1e-5)  # other padding: float noise only
    assert tried == [5, 2, 3, 1, 2] and ran == [2, 1, 2]  # 5 -> 2 + 3 -> 2 + (1 + 2)
