"""Vision-aware measures: values on crafted cases worked by hand, the property that an answer
unchanged without the image is scored more uncertain than one that flips, and that every
comparison with a counterfactual answer reads the change in the direction of the answer given."""

import math

import pytest

from semantic_entropy.scoring import measures as m
from semantic_entropy.sampling.generations_io import image_variant_field, parse_generations_record
from semantic_entropy.scoring.judges import build_judge
from semantic_entropy.scoring.registry import MEASURES_BY_NAME, select_measures
from semantic_entropy.scoring.per_question import ScoringSettings, score_question

LN2 = math.log(2)
H_09 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))  # 0.325083


def test_js_divergence_by_hand():
    # p = .9, q = .1: m = .5 -> JS = ln 2 - H(.9)
    assert m.binary_js_divergence(0.9, 0.1) == pytest.approx(LN2 - H_09, abs=1e-12)
    assert m.binary_js_divergence(0.4, 0.4) == 0.0
    assert m.binary_js_divergence(1.0, 0.0) == pytest.approx(LN2)


def test_visual_contrast_by_hand():
    # yes .72 no .08 renormalises to p = .9; the degraded image gives .02 / .18 -> q = .1
    assert m.visual_contrast((0.72, 0.08), (0.72, 0.08), "yes") == pytest.approx(H_09 + LN2, abs=1e-9)
    assert m.visual_contrast((0.72, 0.08), (0.02, 0.18), "yes") == pytest.approx(H_09 + LN2 - (LN2 - H_09), abs=1e-9)
    assert m.visual_contrast((1.0, 0.0), (0.0, 1.0), "yes") == pytest.approx(0.0, abs=1e-12)  # sure, image-driven
    assert m.visual_contrast((0.5, 0.5), (0.5, 0.5), "no") == pytest.approx(2 * LN2)
    # A sure "no" the degraded image turns into a sure "yes" needed the image (score 0). A
    # 50/50 "yes" the degraded image makes a sure "yes" did not: ln 2 + ln 2 + JS(.5, 1).
    assert m.visual_contrast((0.0, 1.0), (1.0, 0.0), "no") == pytest.approx(0.0, abs=1e-12)
    assert m.visual_contrast((0.5, 0.5), (1.0, 0.0), "yes") == pytest.approx(
        LN2 + LN2 + m.binary_js_divergence(0.5, 1.0), abs=1e-12)


def test_image_independence_by_hand():
    assert m.image_independence((0.9, 0.1), (0.9, 0.1), "yes") == 1.0
    assert m.image_independence((0.9, 0.1), (0.1, 0.9), "yes") == pytest.approx(1 - (LN2 - H_09) / LN2, abs=1e-12)
    # The degraded image makes the "yes" surer: JS(.9, .99) above 1 (by hand: .212982 - (.325083 + .056002)/2).
    assert m.image_independence((0.9, 0.1), (0.99, 0.01), "yes") == pytest.approx(1 + 0.022440 / LN2, abs=1e-6)


def test_perturbation_entropy_by_hand():
    # p(yes) = .9, .5, .7 -> mixture .7
    expected = -(0.7 * math.log(0.7) + 0.3 * math.log(0.3))
    assert m.perturbation_yes_no_entropy([(0.9, 0.1), (0.5, 0.5), (0.7, 0.3)], "yes") == pytest.approx(expected)
    assert m.perturbation_yes_no_entropy([(0.9, 0.1)] * 3, "yes") == pytest.approx(H_09)  # = yes_no_entropy when stable
    # The pool favours the other answer: p(no) = (.1 + .5 + .3) / 3 = .3 for the answer "no" -> 2 ln 2 - H(.3).
    assert m.perturbation_yes_no_entropy([(0.9, 0.1), (0.5, 0.5), (0.7, 0.3)], "no") == pytest.approx(2 * LN2 - expected)
    with pytest.raises(ValueError):
        m.perturbation_yes_no_entropy([], "yes")


def test_contrastive_entropy_by_hand():
    # c = 2 logit(.9) - logit(q)
    for q, contrast in [(0.9, math.log(9)), (0.1, 3 * math.log(9)), (0.99, 2 * math.log(9) - math.log(99))]:
        s = 1 / (1 + math.exp(-contrast))
        expected = -(s * math.log(s) + (1 - s) * math.log(1 - s))
        if s < 0.5:  # contrasted past the other answer: the doubt keeps rising
            expected = 2 * LN2 - expected
        assert m.contrastive_yes_no_entropy((0.9, 0.1), (q, 1 - q), "yes") == pytest.approx(expected, abs=1e-9)
    assert m.contrastive_yes_no_entropy((0.9, 0.1), (0.0, 1.0), "yes") < 1e-9  # clipped log-odds: finite, ~0


CONTRASTS = [m.visual_contrast, m.image_independence, m.contrastive_yes_no_entropy]


@pytest.mark.parametrize("confidence", [0.55, 0.7, 0.9, 0.99])
@pytest.mark.parametrize("score", CONTRASTS)
def test_unchanged_without_image_scores_higher_than_flip(score, confidence):
    real = (confidence, 1 - confidence)
    unchanged, flipped = score(real, real, "yes"), score(real, real[::-1], "yes")
    assert unchanged > flipped


@pytest.mark.parametrize("confidence", [0.55, 0.7, 0.9])
@pytest.mark.parametrize("score", CONTRASTS)
def test_a_degraded_image_that_makes_the_answer_surer_scores_highest(score, confidence):
    """Ordered by how much the degraded image gives the answer: surer > unchanged > taken away.
    A symmetric comparison scores "surer" and "taken away" alike when the shifts match."""
    real = (confidence, 1 - confidence)
    surer = (1 - (1 - confidence) / 3, (1 - confidence) / 3)
    away = ((1 - confidence) / 3, 1 - (1 - confidence) / 3)
    assert score(real, surer, "yes") > score(real, real, "yes") > score(real, away, "yes")


@pytest.mark.parametrize("score", CONTRASTS)
def test_a_no_answer_is_read_like_the_mirrored_yes_answer(score):
    for real, degraded in [((0.8, 0.2), (0.95, 0.05)), ((0.7, 0.3), (0.2, 0.8)), ((0.6, 0.3), (0.3, 0.6))]:
        assert score(real[::-1], degraded[::-1], "no") == pytest.approx(score(real, degraded, "yes"), abs=1e-12)


def test_the_same_change_means_the_opposite_for_the_opposite_answer():
    # p(yes) .3 -> .6 under the degraded image: for a "yes" the image argued against it, for a "no" the image
    # supported it. The old symmetric 1 - JS/ln 2 gave both the same score.
    real, degraded = (0.3, 0.7), (0.6, 0.4)
    shift = m.binary_js_divergence(0.3, 0.6) / LN2
    assert m.image_independence(real, degraded, "yes") == pytest.approx(1 + shift)
    assert m.image_independence(real, degraded, "no") == pytest.approx(1 - shift)


def test_pooled_and_contrasted_doubt_keeps_rising_past_the_other_answer():
    # Answer "yes" with p = .6; perturbations say "no" ever more surely. The entropy of the pool
    # falls again once it favours "no"; the doubt of the answer keeps rising.
    pools = [[(0.6, 0.4), (q, 1 - q), (q, 1 - q)] for q in (0.5, 0.3, 0.1, 0.01)]
    doubts = [m.perturbation_yes_no_entropy(pool, "yes") for pool in pools]
    assert doubts == sorted(doubts) and doubts[-1] > LN2
    contrasted = [m.contrastive_yes_no_entropy((0.6, 0.4), (q, 1 - q), "yes") for q in (0.6, 0.9, 0.99, 0.999)]
    assert contrasted == sorted(contrasted) and contrasted[-1] > LN2
    assert m.answer_doubt(0.5) == pytest.approx(LN2) and m.answer_doubt(0.0) == pytest.approx(2 * LN2)


def test_perturbation_entropy_flags_flips_under_perturbation():
    stable = m.perturbation_yes_no_entropy([(0.9, 0.1), (0.9, 0.1), (0.9, 0.1)], "yes")
    flipping = m.perturbation_yes_no_entropy([(0.9, 0.1), (0.1, 0.9), (0.9, 0.1)], "yes")
    assert flipping > stable


def _record(variants=None, rewordings=None, greedy="Yes", first_token=(0.72, 0.08)):
    answer = {"text": greedy, "token_ids": [5, 2], "token_logprobs": [-0.1, -0.01], "ends_with_eos": True}
    raw = {"question_id": 7, "category": "adversarial", "prompt": "Is there a dog?", "greedy": answer,
           "samples": [answer, answer], "first_token": {"yes_mass": first_token[0], "no_mass": first_token[1]}}
    if variants is not None:
        raw["image_variants"] = variants
    if rewordings is not None:
        raw["question_variants"] = rewordings
    return parse_generations_record(raw, "test:1")


def test_registry_scores_from_a_record_and_skips_older_records():
    variants = {"mean": {"yes_mass": 0.02, "no_mass": 0.18, "top_token_id": 9, "top_prob": 0.5},
                "blur": {"yes_mass": 0.72, "no_mass": 0.08}, "noise": {"yes_mass": 0.5, "no_mass": 0.5}}
    record = _record(variants)
    assert image_variant_field("mean") in record.available_fields()
    settings = ScoringSettings(build_judge("exact"), tuple(select_measures(None)))
    output, skipped = score_question(record, settings)
    scores = output["scores"]
    assert scores["visual_contrast_mean"] == pytest.approx(2 * H_09, abs=1e-9)  # H + ln2 - (ln2 - H)
    assert scores["visual_contrast_blur"] == pytest.approx(H_09 + LN2, abs=1e-9)
    mixture = (0.9 + 0.9 + 0.5) / 3
    assert scores["perturbation_yes_no_entropy"] == pytest.approx(m.binary_entropy(mixture))
    assert not any(s.measure.startswith(("visual_contrast", "perturbation")) and "mask" not in s.measure
                   for s in skipped)

    old_output, old_skipped = score_question(_record(), settings)
    skipped_names = {s.measure for s in old_skipped}
    new_names = {n for n in MEASURES_BY_NAME if n.startswith(("visual_contrast", "image_independence",
                                                               "contrastive_yes_no", "perturbation"))}
    assert len(new_names) == 16 and new_names <= skipped_names  # 3 per contrasted variant (5), 1 pooled
    assert "yes_no_entropy" in old_output["scores"]


def test_masked_and_reworded_probes_score_by_hand():
    # p(yes) = .9 with the real image and question. Hiding the attended patches flips the answer
    # (grounded in what it looks at); hiding random ones changes nothing (image-independent).
    variants = {"blur": {"yes_mass": 0.72, "no_mass": 0.08}, "noise": {"yes_mass": 0.5, "no_mass": 0.5},
                "mask_attended": {"yes_mass": 0.1, "no_mass": 0.9}, "mask_random": {"yes_mass": 0.9, "no_mass": 0.1}}
    rewordings = {"contain": {"yes_mass": 0.3, "no_mass": 0.7}, "see": {"yes_mass": 0.9, "no_mass": 0.1}}
    record = _record(variants, rewordings)
    settings = ScoringSettings(build_judge("exact"), tuple(select_measures(None)))
    scores = score_question(record, settings)[0]["scores"]
    assert scores["visual_contrast_mask_random"] == pytest.approx(H_09 + LN2, abs=1e-9)  # unchanged: + ln 2
    assert scores["visual_contrast_mask_attended"] == pytest.approx(2 * H_09, abs=1e-9)  # flipped: JS = ln2 - H
    assert scores["visual_contrast_mask_random"] > scores["visual_contrast_mask_attended"]
    assert scores["wording_perturbation_yes_no_entropy"] == pytest.approx(m.binary_entropy((0.9 + 0.3 + 0.9) / 3))
    assert scores["image_and_wording_perturbation_yes_no_entropy"] == pytest.approx(
        m.binary_entropy((0.9 + 0.9 + 0.5 + 0.3 + 0.9) / 5))


def test_registry_reads_the_direction_from_the_greedy_answer():
    # p(yes) = .1 and the greedy answer "No, there is not." (eval_pope parses "no"). The mean image
    # makes "no" surer (q(yes) = .02): the answer does not need the image. The blurred image turns it
    # to "yes" (q(yes) = .9): the image supports the "no".
    variants = {"mean": {"yes_mass": 0.02, "no_mass": 0.98}, "blur": {"yes_mass": 0.72, "no_mass": 0.08},
                "noise": {"yes_mass": 0.08, "no_mass": 0.72}}
    record = _record(variants, greedy="No, there is not.", first_token=(0.08, 0.72))
    settings = ScoringSettings(build_judge("exact"), tuple(select_measures(None)))
    scores = score_question(record, settings)[0]["scores"]
    surer = m.binary_js_divergence(0.9, 0.98) / LN2
    assert scores["image_independence_mean"] == pytest.approx(1 + surer)
    assert scores["image_independence_blur"] == pytest.approx(1 - (LN2 - H_09) / LN2)
    assert scores["image_independence_noise"] == pytest.approx(1.0)
    assert scores["visual_contrast_blur"] == pytest.approx(2 * H_09, abs=1e-9)
    assert scores["perturbation_yes_no_entropy"] == pytest.approx(m.answer_doubt((0.9 + 0.1 + 0.9) / 3))
