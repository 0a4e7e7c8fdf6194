"""Grounding probes: logit lens, object-to-patch similarity, patch masks and the pointing game, by hand."""

import math

import torch

from semantic_entropy.probes import grounding as g


def test_logit_lens_is_the_mean_log_softmax_of_the_object_tokens():
    torch.manual_seed(0)
    hidden, unembed = torch.randn(5, 4), torch.randn(7, 4)
    got = g.logit_lens(hidden, unembed, torch.tensor([2, 6]))
    for p in range(5):
        logits = [float(hidden[p] @ unembed[v]) for v in range(7)]
        norm = math.log(sum(math.exp(x) for x in logits))
        assert abs(float(got[p]) - ((logits[2] - norm) + (logits[6] - norm)) / 2) < 1e-5


def test_patch_similarity_averages_object_tokens_then_cosine():
    obj = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # mean (0.5, 0.5)
    patches = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-3.0, -3.0]])
    assert torch.allclose(g.patch_similarity(obj, patches), torch.tensor([1.0, 0.0, -1.0]), atol=1e-6)


def test_box_patch_mask_after_pad_to_square():
    # A 100 x 200 (w x h) image: padded left and right by 50 px; grid 4 -> 50 px patches.
    mask = g.box_patch_mask((0, 0, 10, 10), 100, 200, grid=4).reshape(4, 4)
    assert mask.nonzero().tolist() == [[0, 1]]
    # A box touching two columns and rows.
    mask = g.box_patch_mask((40, 40, 60, 60), 100, 200, grid=4).reshape(4, 4)
    assert mask.nonzero().tolist() == [[0, 1], [0, 2], [1, 1], [1, 2]]
    # The full 336 grid: a 14 px box at the corner of a square image is one patch.
    assert int(g.box_patch_mask((0, 0, 14, 14), 336, 336).sum()) == 1


def test_pointing_game_and_chance():
    scores = torch.zeros(2, 9)
    scores[0, 4], scores[1, 0] = 1.0, 1.0
    masks = torch.zeros(2, 9, dtype=torch.bool)
    masks[:, 3:6] = True
    assert g.pointing_hit(scores, masks).tolist() == [True, False]
    assert torch.allclose(g.pointing_chance(masks), torch.tensor([1 / 3, 1 / 3]))
    assert abs(float(g.top_k_mean(torch.tensor([3.0, 1.0, 2.0]), 2)) - 2.5) < 1e-6
