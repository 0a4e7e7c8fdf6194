"""Uncertainty measures: hand-computed values and invariants (their docstring examples run as doctests)."""

import math

import numpy as np
import pytest

from semantic_entropy.scoring import measures as m


# ------------------------------------------------------------------ log-likelihoods


def test_sequence_log_likelihood_excludes_eos():
    # Tokens "Yes" (-0.3), "," (-0.1), EOS (-2.0): mean of the first two.
    assert m.sequence_log_likelihood([-0.3, -0.1, -2.0], ends_with_eos=True) == pytest.approx(-0.2)
    # Without EOS (hit max_new_tokens) every token counts.
    assert m.sequence_log_likelihood([-0.3, -0.1, -2.0], ends_with_eos=False) == pytest.approx(-0.8)


def test_empty_answer_is_scored_by_its_eos_and_no_tokens_is_an_error():
    assert m.sequence_log_likelihood([-0.01], ends_with_eos=True) == -0.01
    assert m.sequence_log_likelihood([-0.5, -0.01], ends_with_eos=True) == -0.5
    with pytest.raises(ValueError, match="no tokens"):
        m.sequence_log_likelihood([], ends_with_eos=False)


# ------------------------------------------------------------------ semantic entropy family


def test_semantic_entropy_hand_computed():
    # Log-likelihoods -1, -1, -2 in clusters 0, 1, 1:
    # p_0 = e^-1 / (2 e^-1 + e^-2) = 1 / (2 + e^-1) = 0.422318..., p_1 = 0.577681...
    # SE = -(p_0 ln p_0 + p_1 ln p_1) = 0.681029...
    log_p = m.cluster_log_probs([-1.0, -1.0, -2.0], [0, 1, 1])
    assert np.exp(log_p) == pytest.approx([0.4223187982515182, 0.5776812017484818])
    assert m.semantic_entropy([-1.0, -1.0, -2.0], [0, 1, 1]) == pytest.approx(0.6810294159509668)


def test_semantic_entropy_of_probabilities_example():
    # Likelihoods .5, .3 | .2: p = (.8, .2), SE = -(.8 ln .8 + .2 ln .2).
    assert m.semantic_entropy(np.log([0.5, 0.3, 0.2]), [0, 0, 1]) == pytest.approx(0.5004024235381879)


def test_discrete_semantic_entropy_hand_computed():
    assert m.discrete_semantic_entropy([0, 0, 1, 1]) == pytest.approx(math.log(2))
    assert m.discrete_semantic_entropy([0, 1, 2]) == pytest.approx(math.log(3))
    # 3/4, 1/4 -> -(.75 ln .75 + .25 ln .25)
    assert m.discrete_semantic_entropy([2, 2, 2, 5]) == pytest.approx(0.5623351446188083)


def test_naive_entropy_hand_computed():
    assert m.naive_entropy([-0.2, -0.4, -0.9]) == pytest.approx(0.5)


def test_yes_no_entropy_hand_computed():
    # p = .81 / .98 = 0.826530..., H = -(p ln p + (1-p) ln(1-p)) = 0.461344...
    assert m.yes_no_entropy(0.81, 0.17) == pytest.approx(0.4613449442070696)
    assert m.yes_no_entropy(0.3, 0.3) == pytest.approx(math.log(2))
    assert m.yes_no_entropy(0.0, 0.5) == 0.0
    with pytest.raises(ValueError):
        m.yes_no_entropy(0.0, 0.0)


def test_cluster_ids_must_be_dense():
    with pytest.raises(ValueError, match="0..K-1"):
        m.cluster_log_probs([-1.0, -1.0], [0, 2])
    with pytest.raises(ValueError, match="one cluster id per sample"):
        m.cluster_log_probs([-1.0, -1.0], [0])


# ------------------------------------------------------------------ greedy answer


def test_greedy_measures_hand_computed():
    logprobs, entropies = [-0.5, -1.0, -0.02], [0.6, 0.2, 0.05]  # last = EOS
    assert m.greedy_neg_log_likelihood(logprobs, True) == pytest.approx(1.5)
    assert m.greedy_perplexity(logprobs, True) == pytest.approx(math.exp(0.75))
    assert m.greedy_mean_token_entropy(entropies, True) == pytest.approx(0.4)
    assert m.greedy_neg_log_likelihood(logprobs, False) == pytest.approx(1.52)


# ------------------------------------------------------------------ meaning diversity


def test_spectral_measures_hand_computed():
    w = [[1.0, 0.5], [0.5, 1.0]]
    # D = 1.5 I; D^-1/2 W D^-1/2 has eigenvalues 1, 1/3 -> L has 0, 2/3 -> 1 + 1/3.
    assert m.eigval_laplacian(w) == pytest.approx(4 / 3)
    # trace(2I - D) / 4 = (4 - 3) / 4
    assert m.degree_matrix(w) == pytest.approx(0.25)
    # Both eigenvalues (0, 2/3) < 0.9: the embedding spans R^2, centred norm sqrt(2 - 1) = 1.
    assert m.eccentricity(w) == pytest.approx(1.0)


def test_eccentricity_threshold():
    # W off-diagonal .9: L eigenvalues 0 and 1 - .1/1.9 = 0.947 > 0.9: only the constant
    # direction is kept, so the answers coincide: 0.
    assert m.eccentricity([[1, 0.9], [0.9, 1]]) == pytest.approx(0.0, abs=1e-12)
    # .8: 1 - .2/1.8 = 0.889 < 0.9: both kept: 1.
    assert m.eccentricity([[1, 0.8], [0.8, 1]]) == pytest.approx(1.0)


def test_block_similarity_counts_meanings():
    w = m.similarity_from_clusters([0, 0, 1, 2, 1])
    assert m.eigval_laplacian(w) == pytest.approx(3.0)
    assert m.num_semantic_sets([0, 0, 1, 2, 1]) == 3.0
    # Degrees 2, 2, 2, 1, 2: trace(5I - D) / 25 = (25 - 9) / 25.
    assert m.degree_matrix(w) == pytest.approx(16 / 25)
    # Three zero eigenvalues, embedding = cluster indicators / sqrt(size):
    # ||centred||_F^2 = k - sum_c size_c / m = 3 - 5/5 = 2.
    assert m.eccentricity(w) == pytest.approx(math.sqrt(2))


def test_all_distinct_answers():
    w = np.eye(4)
    assert m.eigval_laplacian(w) == pytest.approx(4.0)
    assert m.degree_matrix(w) == pytest.approx(0.75)
    assert m.eccentricity(w) == pytest.approx(math.sqrt(3))


def test_similarity_must_be_symmetric():
    with pytest.raises(ValueError, match="symmetric"):
        m.degree_matrix([[1, 0.2], [0.4, 1]])


# ------------------------------------------------------------------ lexical


def test_rouge_l_hand_computed():
    # LCS(the cat sat on the mat, the cat on a mat) = the cat on mat = 4;
    # P = 4/5, R = 4/6, F = 2PR/(P+R) = 8/11.
    assert m.rouge_l_f("The cat sat on the mat.", "the cat on a mat") == pytest.approx(8 / 11)
    assert m.rouge_l_f("yes", "no") == 0.0
    assert m.rouge_l_f("", "yes") == 0.0


def test_lexical_similarity_hand_computed():
    # Pairs: (a b, a c) F=.5, (a b, a b) 1, (a c, a b) .5: mean 2/3 -> 1/3.
    assert m.lexical_similarity_rouge_l(["a b", "a c", "a b"]) == pytest.approx(1 / 3)
    assert m.lexical_similarity_rouge_l(["Yes"] * 10) == 0.0
    assert m.lexical_similarity_rouge_l(["Yes"]) == 0.0


def test_p_true_uncertainty():
    assert m.p_true_uncertainty(0.9) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        m.p_true_uncertainty(1.5)


# ------------------------------------------------------------------ properties


def _random_case(rng, n):
    log_likelihoods = rng.normal(-1.0, 1.0, size=n)
    cluster_ids = rng.integers(0, rng.integers(1, n + 1), size=n)
    cluster_ids = np.unique(cluster_ids, return_inverse=True)[1]  # dense 0..K-1
    return log_likelihoods, cluster_ids


def test_semantic_entropy_bounds_and_invariances():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 12))
        ll, ids = _random_case(rng, n)
        se = m.semantic_entropy(ll, ids)
        dse = m.discrete_semantic_entropy(ids.tolist())
        assert 0.0 <= se <= math.log(n) + 1e-12
        assert 0.0 <= dse <= math.log(n) + 1e-12
        assert np.exp(m.cluster_log_probs(ll, ids)).sum() == pytest.approx(1.0)
        perm = rng.permutation(n)
        relabel = np.unique(ids[perm], return_inverse=True)[1]
        assert m.semantic_entropy(ll[perm], relabel) == pytest.approx(se)
        assert m.discrete_semantic_entropy(relabel.tolist()) == pytest.approx(dse)
        assert m.naive_entropy(ll[perm].tolist()) == pytest.approx(m.naive_entropy(ll.tolist()))


def test_spectral_and_lexical_permutation_invariance():
    rng = np.random.default_rng(1)
    for _ in range(50):
        n = int(rng.integers(2, 9))
        a = rng.uniform(0, 1, size=(n, n))
        w = (a + a.T) / 2
        np.fill_diagonal(w, 1.0)
        perm = rng.permutation(n)
        wp = w[np.ix_(perm, perm)]
        for measure in (m.eigval_laplacian, m.degree_matrix, m.eccentricity):
            assert measure(wp) == pytest.approx(measure(w), abs=1e-9)
    texts = ["a red car", "red car", "a blue car", "no", "a red car"]
    shuffled = [texts[i] for i in [3, 0, 4, 1, 2]]
    assert m.lexical_similarity_rouge_l(shuffled) == pytest.approx(m.lexical_similarity_rouge_l(texts))


def test_zero_uncertainty_when_all_samples_agree():
    ll = [-0.3, -1.2, -0.01, -2.0]
    same = [0, 0, 0, 0]
    assert m.semantic_entropy(ll, same) == 0.0
    assert m.discrete_semantic_entropy(same) == 0.0
    w = m.similarity_from_clusters(same)
    assert m.degree_matrix(w) == 0.0
    assert m.eccentricity(w) == pytest.approx(0.0, abs=1e-12)
    assert m.eigval_laplacian(w) == pytest.approx(1.0)  # one meaning (a count, not 0)
    assert m.num_semantic_sets(same) == 1.0
    assert m.lexical_similarity_rouge_l(["No"] * 4) == 0.0


def test_semantic_entropy_maximal_when_all_distinct_and_equally_likely():
    assert m.semantic_entropy([-0.5] * 5, [0, 1, 2, 3, 4]) == pytest.approx(math.log(5))
