"""semantic_entropy.evaluation.metrics: hand-worked values, scikit-learn agreement, ties."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from semantic_entropy.evaluation.metrics import (
    UndefinedMetricError,
    accuracy_at_coverage,
    aupr,
    aurac,
    auroc,
    metric_names,
    metrics_of_groups,
    oracle_aurac,
    prr,
    rejection_curve,
    roc_curve,
    tie_groups,
)

# Two right answers (0.1, 0.4) and two errors (0.35, 0.8); the worked example of the docstrings.
IS_FALSE = [0, 0, 1, 1]
SCORES = [0.1, 0.4, 0.35, 0.8]


def test_perfect_reversed_and_tied_scores():
    is_false = [0, 0, 0, 1, 1]
    perfect = [0.1, 0.2, 0.3, 0.8, 0.9]
    assert auroc(is_false, perfect) == 1.0
    assert auroc(is_false, [-s for s in perfect]) == 0.0
    assert auroc(is_false, [0.5] * 5) == 0.5
    assert aupr(is_false, perfect) == 1.0
    assert prr(is_false, perfect) == pytest.approx(1.0)
    assert aurac(is_false, perfect) == pytest.approx(oracle_aurac(5, 2))
    # Reversed: rejection keeps errors first, worse than random.
    assert prr(is_false, [-s for s in perfect]) < 0


def test_hand_worked_values():
    # AUROC: (error, right) pairs won: 0.35>0.1, 0.8>0.1, 0.8>0.4 -> 3 of 4.
    assert auroc(IS_FALSE, SCORES) == 0.75
    # AUPR: 0.8 error (R 1/2, P 1), 0.4 right, 0.35 error (R 1, P 2/3): 1/2 + 1/3 = 5/6.
    assert aupr(IS_FALSE, SCORES) == pytest.approx(5 / 6)
    # Keep 1..4 most certain: right | right, wrong | +right | +wrong -> 1, 1/2, 2/3, 1/2.
    coverage, accuracy = rejection_curve(IS_FALSE, SCORES)
    assert coverage.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert accuracy.tolist() == pytest.approx([1, 1 / 2, 2 / 3, 1 / 2])
    assert aurac(IS_FALSE, SCORES) == pytest.approx(2 / 3)
    # Oracle keeps both right answers first: 1, 1, 2/3, 1/2 -> 19/24; random = accuracy 1/2.
    assert oracle_aurac(4, 2) == pytest.approx(19 / 24)
    assert prr(IS_FALSE, SCORES) == pytest.approx((2 / 3 - 1 / 2) / (19 / 24 - 1 / 2))  # = 4/7
    # 80% of 4 keeps ceil(3.2) = 4; 50% keeps 2 (right, wrong).
    assert accuracy_at_coverage(IS_FALSE, SCORES, 0.8) == 0.5
    assert accuracy_at_coverage(IS_FALSE, SCORES, 0.5) == 0.5
    assert accuracy_at_coverage(IS_FALSE, SCORES, 0.25) == 1.0


def test_ties_are_averaged_and_order_free():
    # A tie at 0.5 of one right and one wrong answer: keeping one of them counts 1/2 right.
    is_false, scores = [0, 1, 0, 1], [0.1, 0.5, 0.5, 0.9]
    assert rejection_curve(is_false, scores)[1].tolist() == pytest.approx([1, 3 / 4, 2 / 3, 1 / 2])
    # The same questions in another order give the same values.
    assert aurac(is_false, scores) == aurac(is_false[::-1], scores[::-1])
    # A constant score is random rejection: AURAC = accuracy, PRR = 0, accuracy at any coverage = accuracy.
    constant = [1.0] * 4
    assert aurac(is_false, constant) == 0.5
    assert prr(is_false, constant) == 0.0
    assert accuracy_at_coverage(is_false, constant, 0.8) == 0.5


def test_roc_curve_steps():
    fpr, tpr = roc_curve([0, 1, 0, 1], [0.1, 0.5, 0.5, 0.9])
    # 0.9 (error) up, then the 0.5 tie moves diagonally, then 0.1 (right) across.
    assert fpr.tolist() == [0.0, 0.0, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 1.0, 1.0]
    assert np.trapezoid(tpr, fpr) == auroc([0, 1, 0, 1], [0.1, 0.5, 0.5, 0.9])


def test_agreement_with_scikit_learn_on_random_data():
    rng = np.random.default_rng(0)
    checked = 0
    for trial in range(300):
        n = int(rng.integers(2, 80))
        is_false = rng.integers(0, 2, n)
        if is_false.min() == is_false.max():
            continue
        # Half the trials with coarse scores, so that ties are common.
        scores = rng.integers(0, 6, n) / 5 if trial % 2 else rng.normal(size=n)
        assert auroc(is_false, scores) == pytest.approx(roc_auc_score(is_false, scores), abs=1e-12)
        assert aupr(is_false, scores) == pytest.approx(average_precision_score(is_false, scores), abs=1e-12)
        checked += 1
    assert checked > 250


def test_rejection_metrics_match_a_brute_force_average_over_tie_orders():
    rng = np.random.default_rng(1)
    is_false = rng.integers(0, 2, 7)
    is_false[:2] = [0, 1]
    scores = rng.integers(0, 3, 7).astype(float)
    # Average over many random tie-breaking orders of the plain (untied) accuracy-rejection curve.
    curves = []
    for _ in range(4000):
        order = np.lexsort((rng.random(7), scores))
        kept_correct = np.cumsum(1 - is_false[order])
        curves.append(kept_correct / np.arange(1, 8))
    assert rejection_curve(is_false, scores)[1] == pytest.approx(np.mean(curves, axis=0), abs=0.02)


@pytest.mark.parametrize("is_false, reason", [([0, 0, 0], "every answer is correct"), ([1, 1], "every answer is wrong")])
def test_single_class_is_undefined_with_a_reason(is_false, reason):
    scores = np.linspace(0, 1, len(is_false))
    for metric in (auroc, aupr, prr):
        with pytest.raises(UndefinedMetricError, match=reason):
            metric(is_false, scores)
    # Rejection accuracy is still defined: 1 or 0 at every coverage.
    assert aurac(is_false, scores) == 1.0 - is_false[0]
    results = metrics_of_groups(tie_groups(is_false, scores))
    assert list(results) == list(metric_names())
    assert isinstance(results["auroc"], str) and reason in results["auroc"]
    assert results["acc_at_90"] == 1.0 - is_false[0]


def test_invalid_inputs_are_named():
    with pytest.raises(ValueError, match="3 entries but uncertainty has 2"):
        auroc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="only 0/1"):
        auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        auroc([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="empty"):
        auroc([], [])
    with pytest.raises(ValueError, match="coverage"):
        accuracy_at_coverage([0, 1], [0.1, 0.2], 0.0)
