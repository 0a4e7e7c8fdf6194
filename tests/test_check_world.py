"""check_world: the acceptance figures on hand-made rows and end to end on a tiny world and model."""

import json

import pytest
import torch

from semantic_entropy.demo import recipe as R
from semantic_entropy.demo import world as w
from semantic_entropy.demo import world_check as wc
from semantic_entropy.demo import world_pope as wp
from semantic_entropy.probes.grounding import box_patch_mask


def test_text_prior_pairs_counted_by_hand():
    related, unrelated = wc.text_prior_pairs()
    assert len(related) == 10 and ("red circle", "blue square") in related and ("blue square", "red circle") in related
    # Asked anchors: 14 classes - itself - its companion = 12 unrelated each. Asked companions:
    # 11 when they have a look-alike (blue square, yellow star, cyan ring, brown triangle), else 12.
    assert len(unrelated) == 5 * 12 + 4 * 11 + 12
    assert ("navy square", "blue square") not in unrelated and ("gold star", "blue square") in unrelated


def row(qid, label, prediction):
    return {"question_id": qid, "label": label, "prediction": prediction}


def test_error_mix_by_hand():
    answered = {"adversarial": [row(1, "yes", "no"), row(2, "no", "yes"), row(3, "no", "yes"), row(4, "yes", "yes")],
                "random": [row(1, "yes", "no"), row(2, "no", "no")], "popular": [row(1, "no", "yes")]}
    mechanisms = {"adversarial": {"1": ["small"], "2": ["prior"], "3": [], "4": []},
                  "random": {"1": ["occlusion"], "2": []}, "popular": {"1": ["lookalike"]}}
    mix = wc.error_mix(answered, mechanisms)
    assert mix["adversarial_prior_false_yes_share"] == pytest.approx(1 / 3)
    assert mix["miss_share_of_all_errors"] == pytest.approx(2 / 5)
    assert mix["by_mechanism"] == {"false_yes:": 1, "false_yes:lookalike": 1, "false_yes:prior": 1,
                                   "miss:occlusion": 1, "miss:small": 1}


def test_criteria_read_the_issue_thresholds():
    fig = {"accuracy": {"adversarial": 0.81, "popular": 0.85, "random": 0.89},
           "recall": {"adversarial": 0.78, "popular": 0.78, "random": 0.78},
           "yes_rate": {"adversarial": 0.49, "popular": 0.45, "random": 0.41},
           "text_prior": {"gap": 0.31},
           "erasure": {"false_yes_region_erased": {"mean_drop": 0.05}, "true_yes_object_erased": {"mean_drop": 0.6}},
           "pointing": {"similarity_middle_ratio": 2.1, "logit_lens_middle_ratio": 1.9},
           "errors": {"adversarial_prior_false_yes_share": 0.3, "miss_share_of_all_errors": 0.5},
           "model_size_mb": 3.0}
    got = wc.criteria(fig)
    assert [k for k, v in got.items() if not v] == ["pointing_logit_lens_2x_chance"]
    fig["accuracy"]["popular"] = 0.80
    assert not wc.criteria(fig)["accuracy_adversarial<popular<random"]


@pytest.fixture(scope="module")
def tiny_case(tmp_path_factory):
    torch.set_num_threads(1)
    S = R.StageSettings
    settings = R.RecipeSettings(clip_hidden=16, clip_heads=1, text_hidden=16, text_layers=2, text_heads=1,
                                text_lm=S(3, 4, 1e-2, warmup_steps=1), clip=S(1, 4, 1e-2, warmup_steps=1),
                                align=S(1, 2, 1e-2, warmup_steps=1), instruct=S(3, 2, 1e-2, warmup_steps=1),
                                pool_size=2, instruct_text_rows=1)
    folder = tmp_path_factory.mktemp("check")
    result = R.train_world_model(settings, log=None)
    R.save_world_model(result, str(folder / "llava"), str(folder / "clip"))
    config = w.WorldConfig(seed=5, num_test_images=3, statistics_scenes=200)
    wp.write_test_set(str(folder / "pope"), config)
    from llava.model.builder import load_pretrained_model

    tokenizer, model, processor, _ = load_pretrained_model(str(folder / "llava"), device="cpu")
    figures = wc.check_world(model, tokenizer, processor, str(folder / "pope"), model_path=str(folder / "llava"))
    return folder, figures


def test_check_world_end_to_end_is_consistent(tiny_case):
    folder, fig = tiny_case
    metadata = json.loads((folder / "pope" / "metadata.json").read_text())
    for split in wp.SPLITS:
        n = metadata["questions_per_split"][split]
        errors = fig["errors"]["per_split"][split]["errors"]
        assert fig["accuracy"][split] == pytest.approx(1 - errors / n)
        assert 0 <= fig["recall"][split] <= 1 and 0 <= fig["yes_rate"][split] <= 1
    # The pointing game's chance: the mean patch share of the asked present objects' boxes.
    records = {r["image"]: r for r in metadata["images"]}
    rows = [json.loads(x) for x in (folder / "pope" / "coco" / "coco_pope_random.json").read_text().splitlines()]
    keys = sorted({(r["image"], w.class_from_question(r["text"])) for r in rows if r["label"] == "yes"})
    shares = []
    for image, name in keys:
        rec = records[image]
        obj = next(o for o in rec["objects"] if o["class"] == name)
        shares.append(float(box_patch_mask(obj["bbox"], rec["width"], rec["height"]).float().mean()))
    assert fig["pointing"]["n"] == len(keys)
    assert fig["pointing"]["chance"] == pytest.approx(sum(shares) / len(shares))
    assert set(fig["pointing"]["similarity_hit_rate"]) == {"1", "2"}
    assert 0 < fig["model_size_mb"] < 1
    assert set(fig["criteria"]) >= {"accuracy_0.80_0.90", "text_prior_gap_at_least_0.3", "model_size_20MB"}
