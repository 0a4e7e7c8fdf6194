"""Uncertainty measures as pure functions: arrays and lists in, numbers out.

Conventions: natural log everywhere; every score is an *uncertainty*, so higher
means more uncertain. An answer's tokens are scored with the end-of-sequence token (EOS)
excluded: `answer_log_probs` drops the last log-prob when the answer ends with EOS.

Families:

- Semantic entropy (Farquhar et al. 2024): `semantic_entropy`, `discrete_semantic_entropy`,
  `naive_entropy`, built on `sequence_log_likelihood` and `cluster_log_probs`.
- First-token yes/no: `yes_no_entropy`.
- Greedy answer: `greedy_neg_log_likelihood`, `greedy_perplexity`, `greedy_mean_token_entropy`.
- Meaning diversity on a similarity matrix (Lin et al. 2023, "Generating with confidence"):
  `num_semantic_sets`, `eigval_laplacian`, `degree_matrix`, `eccentricity`.
- Lexical diversity: `rouge_l_f`, `lexical_similarity_rouge_l`.
- Verbalised/probed confidence: `p_true_uncertainty`.
- Vision-aware, answer against a counterfactual answer (degraded image, reworded question):
  `visual_contrast`, `image_independence`, `contrastive_yes_no_entropy`,
  `perturbation_yes_no_entropy`, all read in the direction of the answer given.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

PROBABILITY_SUM_TOLERANCE = 1e-9

# --------------------------------------------------------------------------------------------
# Per-answer log-likelihoods


def answer_log_probs(token_logprobs: Sequence[float], ends_with_eos: bool) -> list[float]:
    """The answer's token log-probs with the EOS token (the last one, when flagged) dropped.

    An empty answer (EOS alone) keeps its EOS log-prob, so that every answer is scored by at
    least one token: stopping at once is that answer's whole probability. A sample at
    temperature 1 can be empty; dropping or failing on it would bias or stop a long run.

    >>> answer_log_probs([-0.1, -0.2, -0.05], ends_with_eos=True)
    [-0.1, -0.2]
    >>> answer_log_probs([-0.1, -0.2], ends_with_eos=False)
    [-0.1, -0.2]
    >>> answer_log_probs([-3.5], ends_with_eos=True)
    [-3.5]
    >>> answer_log_probs([], ends_with_eos=False)
    Traceback (most recent call last):
    ...
    ValueError: the answer has no tokens
    """
    if not token_logprobs:
        raise ValueError("the answer has no tokens")
    if ends_with_eos and len(token_logprobs) > 1:
        return list(token_logprobs[:-1])
    return list(token_logprobs)


def sequence_log_likelihood(token_logprobs: Sequence[float], ends_with_eos: bool) -> float:
    """Length-normalised log-likelihood: mean token log-prob over the answer, EOS excluded.

    >>> sequence_log_likelihood([-0.2, -0.4, -0.01], ends_with_eos=True)  # mean of -0.2, -0.4
    -0.30000000000000004
    """
    tokens = answer_log_probs(token_logprobs, ends_with_eos)
    return math.fsum(tokens) / len(tokens)


# --------------------------------------------------------------------------------------------
# Entropies


def _logsumexp(values: np.ndarray) -> float:
    top = float(np.max(values))
    return top + math.log(float(np.sum(np.exp(values - top))))


def cluster_log_probs(sample_log_likelihoods: Sequence[float], cluster_ids: Sequence[int]) -> np.ndarray:
    """log p_c = logsumexp(members' log-likelihoods) - logsumexp(all samples' log-likelihoods).

    Cluster ids must be 0..K-1; the result is indexed by cluster id, shape (K,).

    Worked example: samples with log-likelihoods ln .5, ln .3, ln .2 in clusters 0, 0, 1:
    p_0 = (.5 + .3) / 1.0 = .8, p_1 = .2.

    >>> np.exp(cluster_log_probs(np.log([0.5, 0.3, 0.2]), [0, 0, 1])).round(6).tolist()
    [0.8, 0.2]
    """
    log_likelihoods = np.asarray(sample_log_likelihoods, dtype=np.float64)  # (N,)
    ids = np.asarray(cluster_ids, dtype=np.int64)  # (N,)
    if log_likelihoods.shape != ids.shape or log_likelihoods.ndim != 1 or len(ids) == 0:
        raise ValueError(f"need one cluster id per sample, got {len(ids)} ids for {len(log_likelihoods)} samples")
    num_clusters = int(ids.max()) + 1
    if ids.min() < 0 or len(set(ids.tolist())) != num_clusters:
        raise ValueError(f"cluster ids must be 0..K-1 with every id used, got {ids.tolist()}")
    total = _logsumexp(log_likelihoods)
    log_probs = np.array([_logsumexp(log_likelihoods[ids == c]) - total for c in range(num_clusters)])  # (K,)
    total_probability = float(np.exp(log_probs).sum())
    assert abs(total_probability - 1.0) < 1e-6, f"cluster probabilities sum to {total_probability}"
    return log_probs


def entropy_from_log_probs(log_probs: Sequence[float]) -> float:
    """H = -sum_c p_c log p_c for a distribution given by its log-probabilities.

    >>> round(entropy_from_log_probs(np.log([0.5, 0.5])), 12) == round(math.log(2), 12)
    True
    >>> entropy_from_log_probs([0.0])
    0.0
    """
    log_p = np.asarray(log_probs, dtype=np.float64)
    p = np.exp(log_p)
    assert abs(float(p.sum()) - 1.0) < 1e-6, f"probabilities sum to {float(p.sum())}, not 1"
    entropy = float(-np.sum(p * log_p))
    assert entropy > -1e-9, f"entropy {entropy} < 0"
    return entropy if entropy > 0 else 0.0


def semantic_entropy(sample_log_likelihoods: Sequence[float], cluster_ids: Sequence[int]) -> float:
    """Semantic entropy: entropy of the likelihood-weighted cluster distribution.

    Worked example: p = (.8, .2) as in `cluster_log_probs`:
    H = -(.8 ln .8 + .2 ln .2) = 0.500402...

    >>> round(semantic_entropy(np.log([0.5, 0.3, 0.2]), [0, 0, 1]), 6)
    0.500402
    >>> semantic_entropy([-0.1, -3.0], [0, 0])  # one meaning: no uncertainty
    0.0
    """
    return entropy_from_log_probs(cluster_log_probs(sample_log_likelihoods, cluster_ids))


def discrete_semantic_entropy(cluster_ids: Sequence[int]) -> float:
    """Entropy of the cluster frequencies (no log-probs needed).

    Worked example: clusters 0, 0, 0, 1 -> p = (3/4, 1/4),
    H = -(.75 ln .75 + .25 ln .25) = 0.562335...

    >>> round(discrete_semantic_entropy([0, 0, 0, 1]), 6)
    0.562335
    """
    if len(cluster_ids) == 0:
        raise ValueError("need at least one sample")
    counts = np.array(list(Counter(cluster_ids).values()), dtype=np.float64)  # (K,)
    return entropy_from_log_probs(np.log(counts / counts.sum()))


def naive_entropy(sample_log_likelihoods: Sequence[float]) -> float:
    """Naive (length-normalised predictive) entropy: -mean of the samples' log-likelihoods.

    >>> naive_entropy([-0.5, -1.5])
    1.0
    """
    if len(sample_log_likelihoods) == 0:
        raise ValueError("need at least one sample")
    return -math.fsum(sample_log_likelihoods) / len(sample_log_likelihoods)


def yes_no_entropy(yes_mass: float, no_mass: float) -> float:
    """Binary entropy of the first-token yes/no mass renormalised to p = yes / (yes + no).

    H = -p ln p - (1 - p) ln(1 - p); the rest of the first-token mass is ignored.

    Worked example: yes .6, no .2 -> p = .75, H = 0.562335...

    >>> round(yes_no_entropy(0.6, 0.2), 6)
    0.562335
    >>> yes_no_entropy(0.9, 0.0)
    0.0
    """
    if not (yes_mass >= 0 and no_mass >= 0) or yes_mass + no_mass <= 0:
        raise ValueError(f"yes/no mass must be non-negative with a positive sum, got yes={yes_mass} no={no_mass}")
    p = yes_mass / (yes_mass + no_mass)
    entropy = -sum(q * math.log(q) for q in (p, 1.0 - p) if q > 0)
    return entropy if entropy > 0 else 0.0


# --------------------------------------------------------------------------------------------
# Greedy answer


def greedy_neg_log_likelihood(token_logprobs: Sequence[float], ends_with_eos: bool) -> float:
    """Negative log-likelihood of the greedy answer: -sum of token log-probs, EOS excluded.

    This is the maximum-sequence-probability score (-log P(answer)) in log space.

    >>> round(greedy_neg_log_likelihood([-0.25, -0.5, -0.01], ends_with_eos=True), 12)
    0.75
    """
    return -math.fsum(answer_log_probs(token_logprobs, ends_with_eos))


def greedy_perplexity(token_logprobs: Sequence[float], ends_with_eos: bool) -> float:
    """exp(-mean token log-prob) of the greedy answer, EOS excluded.

    >>> round(greedy_perplexity([-0.5, -1.5, -0.01], ends_with_eos=True), 6)  # exp(1)
    2.718282
    """
    return math.exp(-sequence_log_likelihood(token_logprobs, ends_with_eos))


def greedy_mean_token_entropy(token_entropies: Sequence[float], ends_with_eos: bool) -> float:
    """Mean entropy of the next-token distributions over the answer's steps, EOS step excluded.

    >>> greedy_mean_token_entropy([0.4, 0.2, 0.9], ends_with_eos=True)
    0.30000000000000004
    """
    steps = answer_log_probs(token_entropies, ends_with_eos)
    return math.fsum(steps) / len(steps)


# --------------------------------------------------------------------------------------------
# Meaning diversity on a similarity matrix (Lin et al. 2023)


def num_semantic_sets(cluster_ids: Sequence[int]) -> float:
    """Number of distinct meanings among the samples (U_NumSet).

    >>> num_semantic_sets([0, 1, 0, 2])
    3.0
    """
    return float(len(set(cluster_ids)))


def _check_similarity(similarity) -> np.ndarray:
    w = np.asarray(similarity, dtype=np.float64)  # (N, N)
    if w.ndim != 2 or w.shape[0] != w.shape[1] or w.shape[0] == 0:
        raise ValueError(f"similarity must be a non-empty square matrix, got shape {w.shape}")
    if not np.allclose(w, w.T) or w.min() < 0 or w.max() > 1 + 1e-9:
        raise ValueError("similarity must be symmetric with entries in [0, 1]")
    return w


def normalised_laplacian(similarity) -> np.ndarray:
    """L = I - D^-1/2 W D^-1/2 with D = diag(row sums of W); W has a positive diagonal.

    >>> normalised_laplacian([[1.0, 1.0], [1.0, 1.0]]).round(9).tolist()
    [[0.5, -0.5], [-0.5, 0.5]]
    """
    w = _check_similarity(similarity)
    degrees = w.sum(axis=1)  # (N,)
    if degrees.min() <= 0:
        raise ValueError("every answer must be similar to itself (positive degree)")
    inv_sqrt = 1.0 / np.sqrt(degrees)
    return np.eye(len(w)) - inv_sqrt[:, None] * w * inv_sqrt[None, :]


def eigval_laplacian(similarity) -> float:
    """U_EigV = sum_k max(0, 1 - lambda_k) over the eigenvalues of the normalised Laplacian.

    A soft count of meanings: for a 0/1 block matrix it is the number of blocks.

    >>> round(eigval_laplacian(np.ones((3, 3))), 9)  # one meaning
    1.0
    >>> round(eigval_laplacian(np.eye(3)), 9)  # three meanings
    3.0
    >>> round(eigval_laplacian([[1, .5], [.5, 1]]), 9)  # L eigenvalues 0, 2/3 -> 1 + 1/3
    1.333333333
    """
    eigenvalues = np.linalg.eigvalsh(normalised_laplacian(similarity))  # (N,)
    return float(np.clip(1.0 - eigenvalues, 0.0, None).sum())


def degree_matrix(similarity) -> float:
    """U_Deg = trace(m I - D) / m^2 with D the degree matrix (row sums of W), m answers.

    Equals 1 - mean(W): 0 when every pair is similar, (m - 1)/m when none is.

    >>> degree_matrix(np.ones((4, 4)))
    0.0
    >>> degree_matrix(np.eye(4))
    0.75
    >>> degree_matrix([[1, .5], [.5, 1]])  # trace(2I - D) = 2*2 - 3 = 1; 1 / 4
    0.25
    """
    w = _check_similarity(similarity)
    m = len(w)
    return float((m * m - w.sum()) / (m * m))


def eccentricity(similarity, eigenvalue_threshold: float = 0.9) -> float:
    """U_Ecc: spread of the answers' spectral embeddings.

    Each answer j is embedded as row j of V, the (m, k) matrix of the eigenvectors of the
    normalised Laplacian whose eigenvalues are below `eigenvalue_threshold` (0.9, as in Lin
    et al.); U_Ecc = ||V - mean_rows(V)||_F (Frobenius norm of the centred embeddings). The
    Frobenius norm makes the score independent of the basis chosen inside a repeated
    eigenvalue's eigenspace. 0 when all answers agree; sqrt(m - 1) when all differ.

    >>> round(eccentricity(np.ones((3, 3))), 9)
    0.0
    >>> round(eccentricity(np.eye(3)), 9) == round(math.sqrt(2), 9)
    True
    >>> round(eccentricity([[1, 1, 0], [1, 1, 0], [0, 0, 1]]), 9)  # 2 blocks: sqrt(k - (1'Pi 1)/m) = sqrt(2 - 3/3)
    1.0
    """
    w = _check_similarity(similarity)
    eigenvalues, eigenvectors = np.linalg.eigh(normalised_laplacian(w))  # (m,), (m, m)
    embeddings = eigenvectors[:, eigenvalues < eigenvalue_threshold]  # (m, k)
    centred = embeddings - embeddings.mean(axis=0, keepdims=True)  # (m, k)
    return float(np.linalg.norm(centred))


def similarity_from_clusters(cluster_ids: Sequence[int]) -> np.ndarray:
    """0/1 similarity: 1 where two answers share a cluster.

    >>> similarity_from_clusters([0, 1, 0]).tolist()
    [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]
    """
    ids = np.asarray(cluster_ids)
    return (ids[:, None] == ids[None, :]).astype(np.float64)  # (N, N)


# --------------------------------------------------------------------------------------------
# Lexical similarity


def rouge_tokens(text: str) -> list[str]:
    """Lower-cased alphanumeric words, as ROUGE tokenizes (no stemming).

    >>> rouge_tokens("Yes, there's a Dog.")
    ['yes', 'there', 's', 'a', 'dog']
    """
    return re.findall(r"[a-z0-9]+", text.lower())


def longest_common_subsequence_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (dynamic programming).

    >>> longest_common_subsequence_length("a b c d".split(), "a c d e".split())
    3
    """
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for token_a in a:
        current = [0]
        for j, token_b in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if token_a == token_b else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l_f(a: str, b: str) -> float:
    """ROUGE-L F-measure (beta = 1) of two texts: 2PR/(P+R), P = LCS/|b|, R = LCS/|a|.

    Two texts without words count as identical (1.0); one empty and one not as 0.0.

    Worked example: "a cat sat" vs "a cat": LCS 2, P = 1, R = 2/3, F = 0.8.

    >>> round(rouge_l_f("A cat sat", "a cat"), 6)
    0.8
    >>> rouge_l_f("", "")
    1.0
    """
    tokens_a, tokens_b = rouge_tokens(a), rouge_tokens(b)
    if not tokens_a and not tokens_b:
        return 1.0
    lcs = longest_common_subsequence_length(tokens_a, tokens_b)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(tokens_b), lcs / len(tokens_a)
    return 2 * precision * recall / (precision + recall)


def lexical_similarity_rouge_l(texts: Sequence[str]) -> float:
    """Uncertainty = 1 - mean ROUGE-L F over all unordered pairs of answers.

    Pairs of identical texts score 1 without computing; a single answer gives 0.

    Worked example: "yes", "yes", "no": pairs (yes,yes)=1, (yes,no)=0 twice -> 1 - 1/3.

    >>> round(lexical_similarity_rouge_l(["yes", "yes", "no"]), 6)
    0.666667
    """
    counts = Counter(texts)
    n = len(texts)
    if n < 2:
        return 0.0
    unique = list(counts)
    total = sum(c * (c - 1) / 2 for c in counts.values())  # identical pairs, F = 1
    for i, text_i in enumerate(unique):
        for text_j in unique[i + 1 :]:
            total += counts[text_i] * counts[text_j] * rouge_l_f(text_i, text_j)
    return 1.0 - total / (n * (n - 1) / 2)


# --------------------------------------------------------------------------------------------
# P(True)


def p_true_uncertainty(p_true: float) -> float:
    """1 - P(True): the model's probability that its greedy answer is false.

    >>> p_true_uncertainty(0.75)
    0.25
    """
    if not 0.0 <= p_true <= 1.0:
        raise ValueError(f"p_true must be a probability, got {p_true}")
    return 1.0 - p_true


# --------------------------------------------------------------------------------------------
# Vision-aware scores: the yes/no cluster distribution with the real image against the same
# with a degraded image (stage 1 --image-variants) or a reworded question (vision_probes). For a
# yes/no question the meaning clusters are "yes" and "no", so the exact cluster distribution is
# the first token's yes/no mass renormalised; no sampling is needed. Inputs are (yes_mass,
# no_mass) pairs and the greedy answer, "yes" or "no" (parsed as eval_pope parses it).
#
# Every score that compares the answer with a counterfactual one reads the change in the
# direction of the answer given: a degraded image that gives the answer *less* probability
# shows the image supports it; one that gives it *more* shows the answer does not come from the
# image, the signature of a prior-driven answer. A symmetric comparison (JS divergence alone, or
# the entropy of a pooled or contrasted distribution) cannot tell these apart.

LOG_ODDS_CLIP = 1e-12  # probabilities are clipped to [1e-12, 1 - 1e-12] before taking log-odds
ANSWERS = ("yes", "no")


def yes_probability(yes_mass: float, no_mass: float) -> float:
    """p(yes) of the yes/no cluster distribution: yes / (yes + no).

    >>> round(yes_probability(0.6, 0.2), 12)
    0.75
    """
    if not (yes_mass >= 0 and no_mass >= 0) or yes_mass + no_mass <= 0:
        raise ValueError(f"yes/no mass must be non-negative with a positive sum, got yes={yes_mass} no={no_mass}")
    return yes_mass / (yes_mass + no_mass)


def answer_probability(mass: tuple[float, float], answer: str) -> float:
    """The probability the yes/no distribution of `mass` gives to `answer`.

    >>> round(answer_probability((0.6, 0.2), "yes"), 12), round(answer_probability((0.6, 0.2), "no"), 12)
    (0.75, 0.25)
    """
    if answer not in ANSWERS:
        raise ValueError(f"answer must be 'yes' or 'no', got {answer!r}")
    p = yes_probability(*mass)
    return p if answer == "yes" else 1.0 - p


def binary_entropy(p: float) -> float:
    """-p ln p - (1 - p) ln(1 - p), 0 at p = 0 or 1.

    >>> round(binary_entropy(0.5), 6), binary_entropy(1.0)
    (0.693147, 0.0)
    """
    entropy = -sum(x * math.log(x) for x in (p, 1.0 - p) if x > 0)
    return entropy if entropy > 0 else 0.0


def answer_doubt(p_answer: float) -> float:
    """The binary entropy of the answer's probability, continued past 1/2: H(x) for x >= 1/2,
    2 ln 2 - H(x) below. Range [0, 2 ln 2], decreasing in x.

    Equal to the entropy while a distribution still favours the answer given; once it favours
    the other answer the entropy would fall again as it grows surer of the other answer, and
    rank a strong reversal as certain. Continuing it keeps "surer of the other answer" = "more doubt".

    >>> round(answer_doubt(0.9), 6), round(answer_doubt(0.5), 6), round(answer_doubt(0.1), 6)
    (0.325083, 0.693147, 1.061211)
    """
    entropy = binary_entropy(p_answer)
    return entropy if p_answer >= 0.5 else 2.0 * math.log(2) - entropy


def binary_js_divergence(p: float, q: float) -> float:
    """Jensen-Shannon divergence (nats) of the two-point distributions (p, 1-p) and (q, 1-q).

    JS = H(m) - (H(p) + H(q)) / 2 with m = (p + q) / 2; 0 when p = q, at most ln 2.

    Worked example: p = .9, q = .1: m = .5, H(m) = ln 2 = .693147, H(.9) = H(.1) = .325083,
    JS = .693147 - .325083 = .368064.

    >>> round(binary_js_divergence(0.9, 0.1), 6), binary_js_divergence(0.3, 0.3)
    (0.368064, 0.0)
    >>> round(binary_js_divergence(1.0, 0.0), 6)  # total flip of a certain answer: ln 2
    0.693147
    """
    divergence = binary_entropy((p + q) / 2) - (binary_entropy(p) + binary_entropy(q)) / 2
    return max(divergence, 0.0)


def image_support(real_mass: tuple[float, float], degraded_mass: tuple[float, float], answer: str) -> float:
    """JS(p, q) signed by the answer's direction: + when the degraded image gives the answer less
    probability than the real image (the image supports the answer), - when it gives it more
    (the image argues against the answer). Range [-ln 2, ln 2].

    Worked example, answer "yes" with p(yes) = .9: a degraded image with q(yes) = .1 takes the
    answer away, +JS(.9, .1) = .368064; with q(yes) = .99 it makes it surer, -JS(.9, .99) = -.022440
    (m = .945: H(m) - (H(.9) + H(.99)) / 2 = .212982 - (.325083 + .056002) / 2).
    For the answer "no" the same q's mean the opposite.

    >>> [round(image_support((0.9, 0.1), (q, 1 - q), "yes"), 6) for q in (0.1, 0.9, 0.99)]
    [0.368064, 0.0, -0.02244]
    >>> round(image_support((0.1, 0.9), (0.01, 0.99), "no"), 6)  # "no" made surer: same as "yes" above
    -0.02244
    """
    p_answer, q_answer = answer_probability(real_mass, answer), answer_probability(degraded_mass, answer)
    divergence = binary_js_divergence(p_answer, q_answer)
    return divergence if q_answer <= p_answer else -divergence


def visual_contrast(real_mass: tuple[float, float], degraded_mass: tuple[float, float], answer: str) -> float:
    """Visual-contrastive semantic score: H(p) + ln 2 - S, S = `image_support` (signed JS).

    p = yes/no cluster distribution with the real image, q = with the degraded image. The
    score is H(p) + lambda (1 - S / ln 2) with lambda = ln 2, so both terms span ln 2 and carry
    equal weight (a training-free choice). An answer the degraded image leaves unchanged
    (S = 0) scores ln 2 above H(p); one it takes away (image-driven) up to ln 2 less; one it
    makes surer (the image argues against the answer) up to ln 2 more. Range [0, 3 ln 2].

    Worked example, answer "yes", p = (.9, .1): unchanged q: .325083 + .693147 = 1.018230;
    flipped q = (.1, .9): 1.018230 - .368064 = .650166; q = (.99, .01): 1.018230 + .022440 = 1.040670.

    >>> [round(visual_contrast((0.9, 0.1), (q, 1 - q), "yes"), 6) for q in (0.9, 0.1, 0.99)]
    [1.01823, 0.650166, 1.04067]
    """
    return binary_entropy(yes_probability(*real_mass)) + math.log(2) - image_support(real_mass, degraded_mass, answer)


def image_independence(real_mass: tuple[float, float], degraded_mass: tuple[float, float], answer: str) -> float:
    """1 - S / ln 2, S = `image_support`: the image term of `visual_contrast` alone, in [0, 2].

    1 when the degraded image changes nothing, below 1 when it takes the answer away (the
    answer needs the image), above 1 when it makes the answer surer (the answer comes from
    somewhere other than the image).

    >>> [round(image_independence((0.9, 0.1), (q, 1 - q), "yes"), 6) for q in (0.9, 0.1, 0.99)]
    [1.0, 0.468996, 1.032374]
    """
    return 1.0 - image_support(real_mass, degraded_mass, answer) / math.log(2)


def perturbation_yes_no_entropy(masses: Sequence[tuple[float, float]], answer: str) -> float:
    """Image-perturbation semantic entropy: `answer_doubt` of the answer's probability in the
    mixture of the yes/no cluster distributions over several images (the real one and mild
    perturbations) or wordings, equal weights.

    High when the model is unsure on any view, or sure but flipping between them. While the
    mixture favours the answer given this is the mixture's entropy; past 1/2 it keeps rising.

    Worked example, answer "yes": p(yes) = .9 (real), .5 (blur), .7 (noise): mixture .7,
    H(.7) = .610864. Real .6 but both perturbations .1: mixture .267, doubt 2 ln 2 - H(.267) = .806.

    >>> round(perturbation_yes_no_entropy([(0.9, 0.1), (0.5, 0.5), (0.7, 0.3)], "yes"), 6)
    0.610864
    >>> round(perturbation_yes_no_entropy([(0.6, 0.4), (0.1, 0.9), (0.1, 0.9)], "yes"), 3)
    0.806
    """
    if len(masses) == 0:
        raise ValueError("need at least one image's yes/no mass")
    mixture = math.fsum(answer_probability(mass, answer) for mass in masses) / len(masses)
    return answer_doubt(mixture)


def log_odds(p: float) -> float:
    """ln(p / (1 - p)) with p clipped to [LOG_ODDS_CLIP, 1 - LOG_ODDS_CLIP].

    >>> round(log_odds(0.9), 6), log_odds(0.5)
    (2.197225, 0.0)
    """
    p = min(max(p, LOG_ODDS_CLIP), 1.0 - LOG_ODDS_CLIP)
    return math.log(p) - math.log1p(-p)


def contrastive_yes_no_entropy(real_mass: tuple[float, float], degraded_mass: tuple[float, float], answer: str,
                               alpha: float = 1.0) -> float:
    """`answer_doubt` of the answer under the visual-contrastive (VCD-style) yes/no distribution.

    Visual contrastive decoding (Leng et al. 2024) answers from p^(1+alpha) / q^alpha: the
    evidence the image adds over the degraded image. For the answer a this is one log-odds:
    c = (1 + alpha) logit(p_a) - alpha logit(q_a), and the score is answer_doubt(sigmoid(c)).
    An answer the image supports (q leans the other way) becomes surer (low score); one the
    degraded image gives as strongly (the language prior) keeps H(p); one the image weakens
    (q surer of it than p) is pushed toward, and past, the other answer (high score).

    Worked example, alpha = 1, answer "yes", p = .9 (logit 2.197225): unchanged q = .9 gives
    c = 2.197225 and H(.9) = .325083; flipped q = .1 gives c = 6.591674, sigmoid .998630,
    H = .010400; q = .99: c = -.200671, sigmoid .45 < 1/2, doubt 2 ln 2 - H(.45) = .698156.

    >>> [round(contrastive_yes_no_entropy((0.9, 0.1), (q, 1 - q), "yes"), 6) for q in (0.9, 0.1, 0.99)]
    [0.325083, 0.0104, 0.698156]
    """
    p_answer, q_answer = answer_probability(real_mass, answer), answer_probability(degraded_mass, answer)
    contrast = (1.0 + alpha) * log_odds(p_answer) - alpha * log_odds(q_answer)
    return answer_doubt(1.0 / (1.0 + math.exp(-contrast)) if contrast > -700 else 0.0)
