"""The row decoder gives the tree sampler's answers: same draws in the same order, any handover step.

Runs on the CPU (eager steps); where CUDA is present the same checks also run there, with the
step captured as CUDA graphs.
"""

import collections

import pytest
import torch

from llava.model.tiny import random_tiny_llava, tiny_clip_config, tiny_text_config
from semantic_entropy.sampling.draw_order import SampleOrder, predraw_uniforms
from semantic_entropy.sampling.row_decoder import RowOptions
from semantic_entropy.sampling.sampler import Handover, SamplingSettings, sample_batch, sample_shared_prefix

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# Small widths and capacity so that a short answer crosses several graphs and grows its buffers.
SMALL = RowOptions(width_step=4, capacity=4, eager_steps=1)
ENGINES = {
    "rows from the start": Handover(after_steps=0, options=SMALL),
    "rows after one fed token": Handover(after_steps=1, paths_per_question=float("inf"), options=SMALL),
    "rows after three, default widths": Handover(after_steps=3, paths_per_question=float("inf")),
}


@pytest.fixture(scope="module", params=DEVICES)
def peaked(request):
    """A tiny LLaVA (2 key/value heads for 4 query heads) whose samples share prefixes, and its inputs."""
    text = tiny_text_config(300)
    text["num_key_value_heads"] = 2
    model = random_tiny_llava(text, tiny_clip_config(), seed=0).eval().to(request.param)
    with torch.no_grad():
        model.lm_head.weight.mul_(6)  # peaked next-token distributions
    g = torch.Generator().manual_seed(0)
    prompts = [torch.cat([torch.tensor([1]), torch.randint(3, 300, (n,), generator=g), torch.tensor([-200]),
                          torch.randint(3, 300, (5,), generator=g)]) for n in (4, 7, 2, 5)]
    pixels = torch.randn(len(prompts), 3, 336, 336, generator=g)
    with torch.no_grad():
        inputs = model.embed_multimodal(prompts, model.encode_images(pixels))
    return model, inputs, pixels


def _generators(count, seed=10):
    return [torch.Generator().manual_seed(seed + i) for i in range(count)]


def _common_token(results):
    """A token many samples draw after their first: used as EOS so that answers end at many steps."""
    counts = collections.Counter(t for r in results for s in r.samples for t in s.token_ids[1:])
    return counts.most_common(1)[0][0]


_TREE = {}


def _tree_answers(peaked, settings):
    """(EOS, the tree's answers) for the 4 prompts, EOS a common token; computed once per model and settings."""
    key = (id(peaked[0]), settings)
    if key not in _TREE:
        model, inputs, _ = peaked
        eos = _common_token(sample_batch(model, *inputs, _generators(4), settings, 2, engine="tree"))
        _TREE[key] = eos, sample_batch(model, *inputs, _generators(4), settings, eos, engine="tree")
    return _TREE[key]


def assert_same_results(a, b, atol=1e-4):
    for x, y in zip(a, b, strict=True):
        assert x.distinct_answers == y.distinct_answers
        for p, q in zip([x.greedy, *x.samples], [y.greedy, *y.samples], strict=True):
            assert (p.token_ids, p.ends_with_eos) == (q.token_ids, q.ends_with_eos)
            torch.testing.assert_close(torch.tensor(p.token_logprobs), torch.tensor(q.token_logprobs), atol=atol, rtol=0)
            torch.testing.assert_close(torch.tensor(p.token_entropies), torch.tensor(q.token_entropies),
                                       atol=10 * atol, rtol=0)


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("settings", [SamplingSettings(num_samples=12, max_new_tokens=11),
                                      SamplingSettings(num_samples=6, max_new_tokens=9, top_k=4, temperature=0.8),
                                      SamplingSettings(num_samples=6, max_new_tokens=9, top_p=0.8)],
                         ids=["full", "top-k", "top-p"])
def test_rows_give_the_tree_answers(peaked, engine, settings):
    model, inputs, _ = peaked
    eos, tree = _tree_answers(peaked, settings)
    rows = sample_batch(model, *inputs, _generators(4), settings, eos, engine=ENGINES[engine])
    assert_same_results(tree, rows)
    lengths = {len(s.token_ids) for r in tree for s in r.samples}
    assert len(lengths) > 2  # answers end at several steps, in and after the tree


@pytest.mark.parametrize("engine", list(ENGINES))
def test_rows_give_the_tree_answers_with_shared_prefixes(peaked, engine):
    model, _, pixels = peaked
    g = torch.Generator().manual_seed(1)
    prefixes = [torch.cat([torch.tensor([1]), torch.randint(3, 300, (n,), generator=g), torch.tensor([-200])])
                for n in (4, 6)]
    with torch.no_grad():
        prefix = model.embed_multimodal(prefixes, model.encode_images(pixels[:2]))
    suffixes = [(0, [5, 6, 7]), (1, [9, 10]), (0, [11, 12, 13, 14]), (0, [15])]  # 3 questions share row 0
    settings = SamplingSettings(num_samples=8, max_new_tokens=10)
    tree = sample_shared_prefix(model, *prefix, suffixes, _generators(4), settings, 2, engine="tree")
    eos = _common_token(tree)
    tree = sample_shared_prefix(model, *prefix, suffixes, _generators(4), settings, eos, engine="tree")
    rows = sample_shared_prefix(model, *prefix, suffixes, _generators(4), settings, eos, engine=ENGINES[engine])
    assert_same_results(tree, rows)


def test_rows_do_not_depend_on_the_batch(peaked):
    model, (embeds, mask, positions), _ = peaked
    settings = SamplingSettings(num_samples=5, max_new_tokens=8)
    engine = ENGINES["rows from the start"]
    together = sample_batch(model, embeds, mask, positions, _generators(4), settings, 2, engine=engine)
    for i in range(4):
        real = int(mask[i].sum())  # the question alone: its prompt without the batch's left padding
        alone = sample_batch(model, embeds[i : i + 1, -real:], mask[i : i + 1, -real:], positions[i : i + 1, -real:],
                             _generators(1, seed=10 + i), settings, 2, engine=engine)
        assert_same_results(together[i : i + 1], alone)


def test_row_decoder_handles_one_token_answers(peaked):
    model, inputs, _ = peaked
    settings = SamplingSettings(num_samples=4, max_new_tokens=1)
    tree = sample_batch(model, *inputs, _generators(4), settings, 2, engine="tree")
    rows = sample_batch(model, *inputs, _generators(4), settings, 2, engine="rows")
    assert_same_results(tree, rows)
    assert all(len(s.token_ids) == 1 for r in rows for s in r.samples)


def test_row_decoder_handles_greedy_only(peaked):
    model, inputs, _ = peaked
    settings = SamplingSettings(num_samples=0, max_new_tokens=6)
    tree = sample_batch(model, *inputs, _generators(4), settings, 2, engine="tree")
    rows = sample_batch(model, *inputs, _generators(4), settings, 2, engine="rows")
    assert_same_results(tree, rows)
    assert all(len(r.greedy.token_ids) > 1 and not r.samples for r in rows)


def test_uniform_streams_split_anywhere():
    """The row decoder draws a question's uniforms at once; the tree draws them step by step."""
    stepwise = torch.Generator().manual_seed(3)
    pieces = torch.cat([torch.rand(k, generator=stepwise, dtype=torch.float64) for k in (1, 10, 3, 700, 5, 40000)])
    at_once = predraw_uniforms([torch.Generator().manual_seed(3), None], pieces.numel(), "cpu")
    assert torch.equal(at_once[0], pieces) and not at_once[1].any()


def test_draw_order_by_hand():
    """Two paths (samples 0,1,2 and 3), then the first splits; finished samples keep the tree's order."""
    order = SampleOrder(torch.tensor([[True, True, True, True]]), torch.tensor([[0, 1, 2, 3]]),
                        torch.tensor([[0, 0, 0, 1]]))
    stream = torch.arange(20, dtype=torch.float64)[None] / 20
    assert order.uniforms(stream).tolist() == [[0.0, 0.05, 0.1, 0.15]]
    # Path 0 draws 7, 5, 7 (children 7 then 5), path 1 draws 5 (a different prefix); sample 1 ends.
    order.advance(torch.tensor([[7, 5, 7, 5]]), torch.tensor([[False, True, False, False]]), torch.tensor([0]))
    assert order.rank.tolist()[0][0::2] + order.rank.tolist()[0][3:] == [0, 1, 2]  # 0 and 2 first, then 3
    assert order.offset.tolist() == [4] and order.live.tolist() == [[True, False, True, True]]
    assert order.finish_step.tolist() == [[-1, 0, -1, -1]] and order.finish_rank.tolist() == [[-1, 2, -1, -1]]
    assert order.uniforms(stream)[0, [0, 2, 3]].tolist() == [0.2, 0.25, 0.3]
    order.advance(torch.tensor([[4, 0, 4, 9]]), torch.tensor([[True, False, True, True]]), torch.tensor([1]))
    assert order.finished_in_order() == [[1, 0, 2, 3]]


def test_slot_forward_reads_a_subset_of_context_rows(peaked):
    """Rows picked out of a larger cache (questions of other rows already finished) read as a cache of those rows."""
    from llava.model.generation import StepRunner
    from llava.model.slot_forward import SlotForward

    model, (embeds, mask, positions), _ = peaked
    runner = StepRunner(model, embeds, mask, positions)
    kv = [(layer.keys, layer.values) for layer in runner.cache.layers]
    rows = [2, 0]
    visible = mask[rows].bool()[:, None, :].expand(2, 3, mask.shape[1])  # (G, S, C): 3 slots per row
    first = (positions[rows, -1] + 1)[:, None].expand(2, 3)
    tokens = torch.tensor([[5, 6, 7], [8, 9, 10]], device=mask.device)
    step = torch.zeros(1, dtype=torch.long, device=mask.device)
    picked = SlotForward(model, kv, rows, visible, first, steps=4, capacity=4)(tokens, step, 4)
    alone = [(k[rows], v[rows]) for k, v in kv]
    reference = SlotForward(model, alone, [0, 1], visible, first, steps=4, capacity=4)(tokens, step, 4)
    torch.testing.assert_close(picked, reference, atol=0, rtol=0)
    assert picked.shape == (2, 3, runner.logits.shape[-1])
