"""The cluster bootstrap and the paired comparisons of stage 3, on cases built so the answer is known."""

import doctest

import numpy as np
import pytest

from semantic_entropy.evaluation import intervals, paired, resampling, weighted_metrics
from semantic_entropy.evaluation.metrics import UndefinedMetricError, auroc, metrics_of_groups, tie_groups
from semantic_entropy.evaluation.paired import bootstrap_p_values, holm
from semantic_entropy.evaluation.report import EvalSettings, evaluate_split
from semantic_entropy.evaluation.resampling import cluster_indices, draw_clusters
from semantic_entropy.evaluation.weighted_metrics import rank_scores, resampled_metrics


def test_docstring_examples():
    for module in (intervals, paired, resampling, weighted_metrics):
        assert doctest.testmod(module).failed == 0, module.__name__


def settings(unit, n_resamples=500, seed=0, reference=None):
    return EvalSettings(n_resamples=n_resamples, seed=seed, cluster_unit=unit, reference=reference)


@pytest.mark.parametrize("clustered", [False, True])
def test_weighted_metrics_equal_the_reference_on_repeated_questions(clustered):
    """Every metric of a weighted row equals `metrics` on the questions repeated by their weights."""
    rng = np.random.default_rng(0)
    checked = 0
    for trial in range(60):
        n = int(rng.integers(2, 50))
        is_false = rng.integers(0, 2, n)
        scores = rng.integers(0, 5, n) / 4 if trial % 2 else rng.normal(size=n)  # ties in half the trials
        units = rng.integers(0, max(1, n // 3), n) if clustered else np.arange(n)
        cluster_of, k = cluster_indices(units)
        resamples = draw_clusters(cluster_of, k, 15, seed=trial)
        values = resampled_metrics(is_false, scores, resamples.weights, 15, chunk_rows=4)
        for row in range(15):
            repeated = np.repeat(np.arange(n), resamples.weights(rows=slice(row, row + 1))[0])
            expected = metrics_of_groups(tie_groups(is_false[repeated], scores[repeated]))
            for name, value in expected.items():
                if isinstance(value, str):
                    assert np.isnan(values[name][row]), (name, value)
                else:
                    assert values[name][row] == pytest.approx(value, abs=1e-12), name
                    checked += 1
    assert checked > 2000


def test_question_draws_are_the_plain_bootstrap_of_questions():
    """One question per cluster: resample b draws exactly rng.integers(0, n, n), in order."""
    rng = np.random.default_rng((3, 1))
    plain = [np.bincount(rng.integers(0, 9, size=9), minlength=9) for _ in range(5)]
    assert draw_clusters(np.arange(9), 9, 5, seed=(3, 1)).counts.tolist() == [p.tolist() for p in plain]


def duplicated_case(copies):
    """40 images; each holds `copies` identical questions (same answer, same score)."""
    rng = np.random.default_rng(7)
    is_false = np.tile([0, 0, 0, 1], 10)
    score = is_false + rng.normal(scale=0.9, size=40)
    return np.repeat(is_false, copies).astype(float), np.repeat(score, copies), np.repeat(np.arange(40), copies)


def auroc_width(split):
    cell = split["score"]["auroc"]
    return cell["ci_high"] - cell["ci_low"]


def test_duplicating_questions_within_an_image_widens_the_clustered_interval():
    single = duplicated_case(1)
    fivefold = duplicated_case(5)
    by_question = evaluate_split(fivefold[0], {"score": fivefold[1]}, np.arange(200), settings("question"), (0, 0))
    by_image = evaluate_split(fivefold[0], {"score": fivefold[1]}, fivefold[2], settings("image"), (0, 0))
    original = evaluate_split(single[0], {"score": single[1]}, np.arange(40), settings("question"), (0, 0))
    # The point is the same: five copies of every question change no ranking metric.
    assert by_image["score"]["auroc"]["value"] == pytest.approx(original["score"]["auroc"]["value"])
    # Resampling questions takes the 200 copies for 200 independent questions: too narrow, about 1/sqrt(5).
    assert auroc_width(by_image) > 1.7 * auroc_width(by_question)
    # Resampling images draws 40 units as the original 40 questions did, with the same generator:
    # the same draws, weighted 5 times, give the same AUROC interval exactly.
    assert by_image["score"]["auroc"]["ci_low"] == pytest.approx(original["score"]["auroc"]["ci_low"], abs=1e-12)
    assert by_image["score"]["auroc"]["ci_high"] == pytest.approx(original["score"]["auroc"]["ci_high"], abs=1e-12)
    assert (by_image["bootstrap_unit"], by_image["n_units"], by_question["n_units"]) == ("image", 40, 200)


def two_measure_case(second):
    """300 questions over 60 images, 30% wrong; `second` builds the compared score from (is_false, rng)."""
    rng = np.random.default_rng(11)
    is_false = (rng.random(300) < 0.3).astype(float)
    units = np.repeat(np.arange(60), 5)
    reference = is_false + rng.normal(scale=0.8, size=300)
    return is_false, units, {"reference": reference, "other": second(is_false, reference, rng)}


def test_paired_value_is_the_difference_of_the_two_metrics():
    is_false, units, scores = two_measure_case(lambda f, ref, rng: f + rng.normal(scale=1.5, size=300))
    split = evaluate_split(is_false, scores, units, settings("image", reference="reference"), (0, 3))
    assert split["paired_reference"] == "reference" and list(split["paired"]) == ["other"]
    for metric in ("auroc", "aupr", "aurac", "prr"):
        cell = split["paired"]["other"][metric]
        assert set(cell) == {"value", "ci_low", "ci_high", "p_value"}
        assert cell["value"] == pytest.approx(split["other"][metric]["value"] - split["reference"][metric]["value"],
                                              abs=1e-12)
        assert cell["ci_low"] <= cell["value"] <= cell["ci_high"]
    assert split["paired"]["other"]["auroc"]["value"] == pytest.approx(
        auroc(is_false, scores["other"]) - auroc(is_false, scores["reference"]), abs=1e-12)


def test_paired_interval_excludes_zero_for_a_real_difference_and_covers_it_for_noisy_copies():
    # Built to differ: the same signal drowned in twice the noise.
    is_false, units, scores = two_measure_case(lambda f, ref, rng: f + rng.normal(scale=2.5, size=300))
    worse = evaluate_split(is_false, scores, units, settings("image", 1000, reference="reference"), (0, 0))
    cell = worse["paired"]["other"]["auroc"]
    assert cell["value"] < 0 and cell["ci_high"] < 0
    assert cell["p_value"] < 0.01  # at most 4 of 1000 resamples on the other side

    # Two noisy copies of one measure: the same score plus small independent noise each.
    def copy_of(f, reference, rng):
        return reference + rng.normal(scale=0.05, size=300)

    is_false, units, scores = two_measure_case(copy_of)
    scores["reference"] = scores["reference"] + np.random.default_rng(12).normal(scale=0.05, size=300)
    same = evaluate_split(is_false, scores, units, settings("image", 1000, reference="reference"), (0, 0))
    cell = same["paired"]["other"]["auroc"]
    assert cell["ci_low"] < 0 < cell["ci_high"]
    assert cell["p_value"] > 0.05  # not significant
    # The marginal intervals are wide; the paired one is far narrower: most sampling noise is shared.
    marginal = same["other"]["auroc"]["ci_high"] - same["other"]["auroc"]["ci_low"]
    assert cell["ci_high"] - cell["ci_low"] < marginal / 4


def test_p_value_equals_a_hand_count_over_the_same_resamples():
    is_false, units, scores = two_measure_case(lambda f, ref, rng: f + rng.normal(scale=0.9, size=300))
    split = evaluate_split(is_false, scores, units, settings("image", 300, seed=5, reference="reference"), (5, 2))
    # Redraw the same images and recompute each resample's AUROCs one by one with `metrics.auroc`.
    cluster_of, k = cluster_indices(units)
    resamples = draw_clusters(cluster_of, k, 300, seed=(5, 2))
    differences = []
    for row in range(300):
        kept = np.repeat(np.arange(300), resamples.weights(rows=slice(row, row + 1))[0])
        try:
            differences.append(auroc(is_false[kept], scores["other"][kept]) -
                               auroc(is_false[kept], scores["reference"][kept]))
        except UndefinedMetricError:
            continue
    differences = np.array(differences)
    below, above = int((differences <= 0).sum()), int((differences >= 0).sum())
    expected = min(1.0, 2 * min(below, above) / len(differences))
    cell = split["paired"]["other"]["auroc"]
    assert cell["p_value"] == pytest.approx(expected, abs=1e-12)
    assert cell["ci_low"] == pytest.approx(np.percentile(differences, 2.5), abs=1e-12)
    assert cell["ci_high"] == pytest.approx(np.percentile(differences, 97.5), abs=1e-12)


def test_p_values_and_holm_by_hand():
    # 7 of 9 differences above 0, 1 below, 1 exactly 0 (counted on both sides): below 2, above 8.
    differences = np.array([0.3, 0.1, 0.2, -0.1, 0.0, 0.4, 0.05, 0.2, 0.3])
    assert bootstrap_p_values(differences).tolist() == pytest.approx([2 * 2 / 9])
    # NaN resamples (undefined) are left out: 4 valid, one below -> 2 * 1 / 4.
    assert bootstrap_p_values(np.array([0.1, np.nan, 0.2, -0.3, 0.4])).tolist() == pytest.approx([0.5])
    # Every resample on one side: 0, i.e. below the resolution 1/B.
    assert bootstrap_p_values(np.array([0.1, 0.2, 0.3])).tolist() == [0.0]
    assert np.isnan(bootstrap_p_values(np.array([np.nan, np.nan]))[0])
    # Holm over 4 tests: sorted .001 .01 .02 .04 -> .004, .03, .04, .04 (kept monotone).
    assert holm([0.04, 0.001, 0.02, 0.01]) == pytest.approx([0.04, 0.004, 0.04, 0.03])


def test_undefined_paired_cells_say_why():
    is_false = np.zeros(12)  # every answer right: AUROC has no value, AURAC has
    units = np.repeat(np.arange(4), 3)
    scores = {"a": np.linspace(0, 1, 12), "b": np.linspace(1, 0, 12)}
    split = evaluate_split(is_false, scores, units, settings("image", 50, reference="a"), (0, 0))
    assert split["paired"]["b"]["auroc"]["value"] is None
    assert "every answer is correct" in split["paired"]["b"]["auroc"]["reason"]
    assert split["paired"]["b"]["aurac"]["value"] == 0.0


def test_chunked_rows_equal_one_pass():
    rng = np.random.default_rng(4)
    is_false, scores = rng.integers(0, 2, 90), rng.normal(size=90)
    resamples = draw_clusters(*cluster_indices(np.repeat(np.arange(30), 3)), 40, seed=1)
    whole = resampled_metrics(is_false, scores, resamples.weights, 40, chunk_rows=40)
    pieces = resampled_metrics(is_false, scores, resamples.weights, 40, chunk_rows=7)
    for name in whole:
        assert np.array_equal(whole[name], pieces[name], equal_nan=True)
    assert rank_scores(is_false, scores).order.shape == (90,)
