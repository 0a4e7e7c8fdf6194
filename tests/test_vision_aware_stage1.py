"""Stage 1 --image-variants: the field it writes, its cost in forward passes, the noise's batch-invariance."""

import functools
import json

import pytest
import torch

from llava.constants import POPE_ANSWER_SUFFIX
from llava.jsonl_io import read_jsonl
from semantic_entropy import compute_se_myself
from semantic_entropy.probes import image_variants as iv
from semantic_entropy import model_vqa_loader as stage1
from semantic_entropy.sampling import stage1 as stage1_library
from semantic_entropy.sampling.sampler import SamplingSettings

PAIRS = [("img_0.png", "Is there a red circle in the image?"), ("img_1.png", "Is there a dog in the imange?"),
         ("img_0.png", "Is there a blue square in the image?"), ("img_2.png", "What colour is the triangle?"),
         ("img_1.png", "Is there a green star in the image?"), ("img_3.png", "Is there a dog in the imange?")]


@pytest.fixture()
def questions(tmp_path):
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps({"question_id": 300 + i, "image": image, "text": text + POPE_ANSWER_SUFFIX,
                                        "category": "adversarial"}) + "\n" for i, (image, text) in enumerate(PAIRS)))
    return path


def _run(tiny, questions, out, *extra):
    out.mkdir()
    stage1.main([
        "--model-path", str(tiny.original), "--question-file", str(questions), "--image-folder", str(tiny.images),
        "--answers-file", str(out / "answers.jsonl"), "--temperature", "0", "--conv-mode", "vicuna_v1",
        "--device", "cpu", "--max_new_tokens", "3", "--num-samples", "3", *extra,
    ])  # fmt: skip
    return read_jsonl(str(out / "answers.generations.jsonl"))


def test_writes_the_field_and_stage2_scores_it(tiny_checkpoints, questions, tmp_path):
    plain = _run(tiny_checkpoints, questions, tmp_path / "plain")
    gens = _run(tiny_checkpoints, questions, tmp_path / "v", "--image-variants", "mean,blur,noise")
    for with_variants, without in zip(gens, plain):
        assert "image_variants" not in without
        assert set(with_variants["image_variants"]) == {"mean", "blur", "noise"}
        for summary in with_variants["image_variants"].values():
            assert set(summary) == {"yes_mass", "no_mass", "top_token_id", "top_prob"}
            assert 0 <= summary["yes_mass"] + summary["no_mass"] <= 1 + 1e-6 and 0 < summary["top_prob"] <= 1 + 1e-6
        # the option adds passes; it does not change the answers
        assert with_variants["greedy"] == without["greedy"] and with_variants["samples"] == without["samples"]
        assert with_variants["first_token"] == without["first_token"]
    assert gens[0]["image_variants"]["mean"] != gens[0]["image_variants"]["noise"]
    out = tmp_path / "uncertainty.jsonl"
    assert compute_se_myself.main(["--generations-file", str(tmp_path / "v" / "answers.generations.jsonl"),
                                   "--output-file", str(out)]) == 0
    scores = read_jsonl(str(out))[0]["scores"]
    for name in ("visual_contrast_mean", "visual_contrast_blur", "perturbation_yes_no_entropy",
                 "contrastive_yes_no_entropy_noise", "image_independence_mean"):
        assert name in scores
    manifest = json.loads((tmp_path / "v" / "answers.generations.jsonl.manifest.json").read_text())
    assert set(manifest["settings"]["image_variants"]) == {"mean", "blur", "noise"}


class ForwardCounter:
    """Counts the language model's prefills (inputs_embeds) and token steps, and vision-tower calls."""

    def __init__(self, model):
        self.prefills = self.steps = self.vision = 0
        forward, encode = model.forward, model.encode_images

        @functools.wraps(forward)
        def counted_forward(*args, **kwargs):
            if kwargs.get("inputs_embeds") is not None:
                self.prefills += 1
            else:
                self.steps += 1
            return forward(*args, **kwargs)

        def counted_encode(pixel_values):
            self.vision += 1
            return encode(pixel_values)

        model.forward, model.encode_images = counted_forward, counted_encode


@pytest.mark.parametrize("prefix_sharing", [True, False])
def test_cost_is_one_extra_prefill_per_variant(tiny_checkpoints, questions, prefix_sharing):
    from llava.eval.vqa_data import QuestionDataset, batches
    from llava.model.builder import load_pretrained_model
    from semantic_entropy.sampling.prefix_groups import group_batches, group_questions, plan_batches

    tokenizer, model, processor, _ = load_pretrained_model(str(tiny_checkpoints.original), device="cpu")
    pending = read_jsonl(str(questions))
    if prefix_sharing:
        planned = plan_batches(group_questions(pending, tokenizer, "vicuna_v1"), max_questions=8, max_images=8)
        batch = next(iter(group_batches(planned, str(tiny_checkpoints.images), processor, model.config, 0)))
        run = lambda variants: stage1_library.run_group_batch_with_variants(  # noqa: E731
            model, batch["groups"], batch["pixel_values"], settings, 0, tokenizer.eos_token_id, variants)
    else:
        dataset = QuestionDataset(pending, str(tiny_checkpoints.images), tokenizer, processor, model.config,
                                  "vicuna_v1")
        batch = next(iter(batches(dataset, len(pending), 0)))
        run = lambda variants: stage1_library.run_batch_with_variants(  # noqa: E731
            model, batch, settings, 0, tokenizer.eos_token_id, variants)
    settings = SamplingSettings(num_samples=3, max_new_tokens=3)
    counter = ForwardCounter(model)
    run(())
    base = (counter.prefills, counter.steps, counter.vision)
    counter.prefills = counter.steps = counter.vision = 0
    questions_, _, variant_probs = run(("mean", "noise"))
    extra = (counter.prefills - base[0], counter.steps - base[1], counter.vision - base[2])
    # one more prefill (and vision pass) per variant per batch; shared prefixes add one question-extension step
    assert extra == ((2, 2, 2) if prefix_sharing else (2, 0, 2))
    assert base[0] == 1 and base[2] == 1
    assert len(variant_probs) == len(questions_) == len(PAIRS)
    assert all(set(p) == {"mean", "noise"} and p["mean"].shape == variant_probs[0]["noise"].shape
               for p in variant_probs)


def test_noise_is_batch_invariant(tiny_checkpoints, questions, tmp_path):
    one = _run(tiny_checkpoints, questions, tmp_path / "b1", "--image-variants", "noise,blur",
               "--batch-size", "1", "--images-per-batch", "1")
    four = _run(tiny_checkpoints, questions, tmp_path / "b4", "--image-variants", "noise,blur", "--batch-size", "4")
    unshared = _run(tiny_checkpoints, questions, tmp_path / "u", "--image-variants", "noise,blur",
                    "--no-prefix-sharing", "--batch-size", "4")
    for a, b, c in zip(one, four, unshared):
        for variant in ("noise", "blur"):
            for key in ("yes_mass", "no_mass"):
                assert a["image_variants"][variant][key] == pytest.approx(b["image_variants"][variant][key], abs=1e-5)
                assert a["image_variants"][variant][key] == pytest.approx(c["image_variants"][variant][key], abs=1e-5)


def test_noise_depends_on_image_name_and_seed_only():
    pixels = torch.zeros(3, 3, 8, 8)
    batch = iv.noisy_images(pixels, ["a.png", "b.png", "a.png"], base_seed=0)
    alone = iv.noisy_images(pixels[:1], ["a.png"], base_seed=0)
    assert torch.equal(batch[0], alone[0]) and torch.equal(batch[0], batch[2])
    assert not torch.equal(batch[0], batch[1])
    assert not torch.equal(alone, iv.noisy_images(pixels[:1], ["a.png"], base_seed=1))
    assert batch.std().item() == pytest.approx(iv.NOISE_STD, rel=0.1)


def test_blur_and_mean_variants():
    pixels = torch.zeros(1, 3, 96, 96)  # sigma = 96 / 24 = 4 px
    pixels[..., 46:50, 46:50] = 1.0
    blurred = iv.degrade_images("blur", pixels, ["x"], 0)
    assert blurred.shape == pixels.shape and blurred.max() < 0.5  # the small square is smeared out
    assert blurred.sum().item() == pytest.approx(pixels.sum().item(), rel=0.05)
    assert iv.degrade_images("mean", pixels, ["x"], 0).abs().sum() == 0
    with pytest.raises(ValueError):
        iv.parse_image_variants("mean,sepia")
