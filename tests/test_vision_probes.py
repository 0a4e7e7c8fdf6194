"""vision_probes: attention-masked and reworded first-token distributions, checked against direct computations."""

import pytest
import torch
from PIL import Image

from llava.conversation import build_prompt
from llava.jsonl_io import read_jsonl
from llava.mm_utils import process_images, tokenizer_image_token
from llava.model.builder import load_pretrained_model
from llava.model.generation import StepRunner
from semantic_entropy import compute_se_myself, vision_probes
from semantic_entropy.probes import vision_probes as probes_library
from semantic_entropy.sampling.answer_tokens import yes_no_token_ids
from semantic_entropy.sampling.prefix_groups import Group, split_at_image
from tests.tiny_stage1 import tiny_stage1


@pytest.fixture(scope="module")
def probed(tiny_checkpoints, tmp_path_factory):
    out = tmp_path_factory.mktemp("probes")
    common, inputs = tiny_stage1(tiny_checkpoints, out)
    probe_args = [*common, *inputs, "--mask-fraction", "0.25"]
    vision_probes.main([*probe_args, "--output-file", str(out / "batched.jsonl"), "--batch-size", "3"])
    vision_probes.main([*probe_args, "--output-file", str(out / "single.jsonl"), "--batch-size", "1"])
    return out, read_jsonl(str(out / "a.generations.jsonl")), read_jsonl(str(out / "batched.jsonl"))


def _direct_masses(model, tokenizer, processor, image_path, text, hidden_patches=None):
    """First-token yes/no masses of one question, computed without the probe code."""
    yes, no = yes_no_token_ids(tokenizer, model.scored_vocab_size)
    image = Image.open(image_path).convert("RGB")
    ids = tokenizer_image_token(build_prompt(text, "vicuna_v1"), tokenizer, return_tensors="pt")
    with torch.no_grad():
        embeds, mask, positions = model.embed_multimodal(
            [ids], model.encode_images(process_images([image], processor, model.config)))
        if hidden_patches is not None:
            slot = int((ids == -200).nonzero()[0, 0])  # no padding in a batch of one
            mask = mask.clone()
            mask[0, slot + torch.as_tensor(hidden_patches)] = 0
        probs = StepRunner(model, embeds, mask, positions).logits.softmax(-1)[0]
    return float(probs[yes].sum()), float(probs[no].sum())


def test_probes_match_direct_computations(probed, tiny_checkpoints):
    out, generations, records = probed
    assert [r["question_id"] for r in records] == [g["question_id"] for g in generations]
    for record, stage1_record in zip(records, generations):
        kept = {k: v for k, v in record.items() if k not in ("image_variants", "question_variants", "attention_probe")}
        assert kept == {k: v for k, v in stage1_record.items() if k != "image_variants"}
        # The capture pass is the real prompt: it reproduces stage 1's first-token mass.
        assert record["attention_probe"]["real_yes_mass"] == pytest.approx(stage1_record["first_token"]["yes_mass"],
                                                                           abs=1e-5)
        assert record["attention_probe"]["masked_patches"] == 144  # 0.25 of 576
        # The hidden top quarter holds at least a quarter of the image attention.
        assert 0.25 <= record["attention_probe"]["top_share"] <= 1
        assert 0 < record["attention_probe"]["map_entropy"] <= 1

    tokenizer, model, processor, _ = load_pretrained_model(str(tiny_checkpoints.original), device="cpu")
    record = records[1]
    image = tiny_checkpoints.images / record["image"]
    drawn = probes_library.random_patches(record["question_id"], 0, 576, 144)
    expected = _direct_masses(model, tokenizer, processor, image, record["prompt"], drawn)
    got = record["image_variants"]["mask_random"]
    assert (got["yes_mass"], got["no_mass"]) == pytest.approx(expected, abs=1e-5)
    real = _direct_masses(model, tokenizer, processor, image, record["prompt"])
    assert abs(real[0] - got["yes_mass"]) > 1e-6  # hiding a quarter of the image changes the answer distribution
    for name, text in probes_library.reworded_questions(record["prompt"]).items():
        got = record["question_variants"][name]
        expected = _direct_masses(model, tokenizer, processor, image, text)
        assert (got["yes_mass"], got["no_mass"]) == pytest.approx(expected, abs=1e-5)


def test_probes_do_not_depend_on_the_batch_and_feed_stage_2(probed):
    out, _, batched = probed
    single = read_jsonl(str(out / "single.jsonl"))
    for a, b in zip(batched, single):
        for family in ("image_variants", "question_variants"):
            assert a[family].keys() == b[family].keys()
            for name in a[family]:
                assert a[family][name]["yes_mass"] == pytest.approx(b[family][name]["yes_mass"], abs=1e-5)
    assert compute_se_myself.main(["--generations-file", str(out / "batched.jsonl"),
                                   "--output-file", str(out / "u.jsonl")]) == 0
    scores = read_jsonl(str(out / "u.jsonl"))[0]["scores"]
    for name in ("visual_contrast_mask_attended", "visual_contrast_mask_random", "wording_perturbation_yes_no_entropy"):
        assert name in scores


def test_cost_is_three_prefills_per_question_and_one_shared_pass_for_the_rewordings(tiny_checkpoints):
    tokenizer, model, processor, _ = load_pretrained_model(str(tiny_checkpoints.original), device="cpu")
    yes, no = yes_no_token_ids(tokenizer, model.scored_vocab_size)
    questions = [{"question_id": 1, "image": "a.png", "text": "Is there a red circle in the image?"},
                 {"question_id": 2, "image": "a.png", "text": "What is this?"}]  # reworded / not
    ids = [tokenizer_image_token(build_prompt(q["text"], "vicuna_v1"), tokenizer) for q in questions]
    prefix = split_at_image(ids[0])[0]
    group = Group("a.png", prefix, questions, [split_at_image(i)[1] for i in ids])
    rewordings = [probes_library.reworded_suffixes(q["text"], prefix, tokenizer, "vicuna_v1") for q in questions]
    assert len(rewordings[0]) == 2 and rewordings[1] == {}
    calls = {"language": 0, "vision": 0}
    language = model.model.language_model
    hooks = [language.register_forward_hook(lambda *a: calls.__setitem__("language", calls["language"] + 1)),
             model.model.vision_tower.register_forward_hook(lambda *a: calls.__setitem__("vision", calls["vision"] + 1))]
    probes = probes_library.probe_batch(model, [group], torch.zeros(1, 3, 336, 336), rewordings, range(2), 0.1, 0,
                                       yes, no, tokenizer.eos_token_id)
    for hook in hooks:
        hook.remove()
    # capture + 2 masks for the batch's questions, then 1 prefix prefill + 1 tree step for every rewording;
    # the image is encoded once for both questions.
    assert calls == {"language": 3 + 2, "vision": 1}
    assert probes[1]["question_variants"] == {} and set(probes[0]["question_variants"]) == {"contain", "see"}


def test_bad_mask_fraction_is_refused():
    with pytest.raises(ValueError, match="mask-fraction"):
        probes_library.number_of_masked_patches(576, 1.5)


def test_the_registry_scores_exactly_the_rewordings_the_pass_writes():
    from semantic_entropy.scoring import registry

    assert set(registry.REWORDINGS) == set(probes_library.REWORDINGS)
