"""Long answers at the GPU's pace: once a question's answers diverge, each grows in a row of its own.

The tree sampler (`sampler._decode`) decides every step on the host: which paths split, which
finish, which cache columns each sees. That suits POPE's one- or two-token answers, and its
host work per step grows with the number of distinct paths. For long answers it hands its live
paths over to this decoder, which gives every question 1 + N fixed rows (slot 0 the greedy
answer, slots 1..N the samples) and keeps all bookkeeping in device tensors: the context the
tree built (prompt, shared prefix, tokens fed so far) is read in place, each row appends to its
own preallocated answer columns, and a step (forward, greedy choice, draws, the draw order of
`draw_order.SampleOrder`, end tests) has fixed shapes, so on CUDA it is captured as a graph and
replayed with no host synchronisation but a lagged check that anything is still growing.

Draws use the question's own generator stream in the tree sampler's order, so answers are the
ones the tree sampler gives for the same seeds.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from llava.model.slot_forward import SlotForward
from semantic_entropy.sampling.draw_order import SampleOrder, predraw_uniforms
from semantic_entropy.sampling.draws import inverse_cdf, sampling_cdf


@dataclass
class Finished:
    """One answer finished by the row decoder, for the question at index `question`."""

    question: int
    token_ids: list[int]
    token_logprobs: list[float]
    token_entropies: list[float]
    is_greedy: bool


@dataclass
class RowOptions:
    graphs: bool = True  # capture the step as CUDA graphs (CUDA only)
    eager_steps: int = 1  # steps run eagerly before capturing (warms the side stream; one-token answers end)
    attention: str = "auto"  # scaled-dot-product backend: "auto" (PyTorch's choice), "efficient", "cudnn", "math"
    width_step: int = 16  # attention spans the answer columns rounded up to this (one graph per width;
    # 16 reads fewer unwritten columns than 32, and graphs captured without a device sync cost little)
    capacity: int = 32  # answer steps allocated at first; doubled when reached
    check_lag: int = 2  # the host reads the "anything growing" flag this many steps late


@dataclass
class _Layout:
    """Where the handed-over paths sit: G context rows x S = per_row * (1 + N) slots."""

    rows: list[int]  # context row of each group
    questions: list[int | None]  # (G * per_row,) question index of each question slot
    slot_paths: list  # (G * S,) the path a slot continues, or None
    live: torch.Tensor  # (Q, N) bool
    rank: torch.Tensor  # (Q, N) long
    group: torch.Tensor  # (Q, N) long
    greedy_live: torch.Tensor  # (Q,) bool
    answer_length: int  # tokens of every handed-over path (the last one not yet fed)


def _layout(paths, num_samples: int) -> _Layout:
    by_question: dict[int, list] = {}
    for path in paths:
        by_question.setdefault(path.question, []).append(path)
    by_row: dict[int, list[int]] = {}
    for question, own in by_question.items():
        by_row.setdefault(own[0].row, []).append(question)
    rows = list(by_row)
    per_row = max(len(qs) for qs in by_row.values())
    width = 1 + num_samples
    questions, slot_paths = [], []
    live, rank, group, greedy_live = [], [], [], []
    for row in rows:
        for slot in range(per_row):
            question = by_row[row][slot] if slot < len(by_row[row]) else None
            questions.append(question)
            own = by_question.get(question, [])
            greedy = [p for p in own if p.is_greedy]
            samples = [(index, p) for index, p in enumerate(own) for _ in range(p.num_samples)]  # path order
            slot_paths += [greedy[0] if greedy else None] + [p for _, p in samples]
            slot_paths += [None] * (num_samples - len(samples))
            greedy_live.append(bool(greedy))
            live.append([True] * len(samples) + [False] * (num_samples - len(samples)))
            rank.append(list(range(num_samples)))
            group.append([index for index, _ in samples] + [num_samples] * (num_samples - len(samples)))
    lengths = {len(p.token_ids) for p in paths}
    assert len(lengths) == 1, "live paths grow in step"
    assert len(slot_paths) == len(rows) * per_row * width
    return _Layout(rows, questions, slot_paths, torch.tensor(live), torch.tensor(rank), torch.tensor(group),
                   torch.tensor(greedy_live), lengths.pop())


def _context(tree, layout: _Layout, slots: int):
    """Per layer (keys, values) of the tree's cache (B, Hkv, C, D), and the (G, S, C) visibility of
    the groups' rows `layout.rows`."""
    columns = tree.prompt_columns + tree.appended
    device = tree.prompt_visible.device
    kv = [(layer.keys, layer.values) for layer in tree.runner.cache.layers]
    visible = torch.zeros((len(layout.rows), slots, columns), dtype=torch.bool)
    prompt = tree.prompt_visible[layout.rows].cpu()  # (G, T)
    visible[:, :, : tree.prompt_columns] = prompt[:, None, :]
    for flat, path in enumerate(layout.slot_paths):
        if path is not None and path.columns:
            visible[flat // slots, flat % slots, path.columns] = True
    return kv, visible.to(device)


class RowDecoder:
    """The handed-over paths of a batch, decoded to their ends in fixed rows."""

    def __init__(self, model, tree, paths, generators, settings, eos_token_id: int, options: RowOptions):
        self.settings, self.eos, self.options = settings, eos_token_id, options
        self.n = settings.num_samples
        self.layout = layout = _layout(paths, self.n)
        self.width = 1 + self.n
        groups, per_row = len(layout.rows), len(layout.questions) // len(layout.rows)
        self.slots = per_row * self.width
        self.steps = settings.max_new_tokens - layout.answer_length  # steps left, the last ends every answer
        device = tree.prompt_visible.device
        kv, visible = _context(tree, layout, self.slots)
        first = [p.start_position + layout.answer_length - 1 if p is not None else 0 for p in layout.slot_paths]
        feed = [p.token_ids[-1] if p is not None else 0 for p in layout.slot_paths]  # idle slots feed any id
        capacity = min(self.steps, self._round(options.capacity))
        self.forward = SlotForward(model, kv, layout.rows, visible, torch.tensor(first, device=device).view(groups, self.slots),
                                   self.steps, capacity)
        del kv
        tree.runner.cache = None  # copied into the slot buffers; the tree is not fed again
        self.tokens = torch.tensor(feed, device=device).view(groups, self.slots)  # (G, S) next tokens to feed
        self.step = torch.zeros(1, dtype=torch.long, device=device)
        self.order = SampleOrder(layout.live.to(device), layout.rank.to(device), layout.group.to(device))
        self.greedy_live = layout.greedy_live.to(device, copy=True)  # (Q,)
        self.greedy_length = torch.zeros_like(self.greedy_live, dtype=torch.long)  # (Q,) new greedy tokens
        self.any_live = torch.ones(1, dtype=torch.bool, device=device)
        self.stream = predraw_uniforms([generators[q] if q is not None else None for q in layout.questions],
                                       self.n * self.steps, device)  # (Q, N * steps)
        questions = len(layout.questions)
        self.out_tokens = torch.zeros((questions, self.width, self.steps), dtype=torch.long, device=device)
        self.out_logprobs = torch.zeros((questions, self.width, self.steps), dtype=torch.float32, device=device)
        self.out_entropies = torch.zeros_like(self.out_logprobs)
        self.steps_run = 0

    def _round(self, columns: int) -> int:
        step = self.options.width_step
        return -(-columns // step) * step

    def _step(self, width: int) -> None:
        """Feed the current tokens, choose the next ones, update the order; all in device tensors."""
        questions = len(self.layout.questions)
        with _attention_backend(self.options.attention):
            logits = self.forward(self.tokens, self.step, width).view(questions, self.width, -1)  # (Q, 1 + N, V)
        logprobs = torch.log_softmax(logits, dim=-1)  # untempered
        entropies = -(logprobs.exp() * logprobs.nan_to_num(neginf=0.0)).sum(-1)  # (Q, 1 + N)
        greedy = logits[:, 0].argmax(dim=-1)  # (Q,)
        if self.n:
            uniforms = self.order.uniforms(self.stream)  # (Q, N)
            cdf = sampling_cdf(logits[:, 1:].reshape(questions * self.n, -1), self.settings)  # (Q * N, V)
            drawn = inverse_cdf(cdf, uniforms.reshape(-1)).view(questions, self.n)
        else:  # greedy answers only
            drawn = greedy.new_zeros((questions, 0))
        chosen = torch.cat([greedy[:, None], drawn], dim=1)  # (Q, 1 + N)
        chosen_logprobs = logprobs.gather(2, chosen[..., None])[..., 0]
        self.out_tokens.index_copy_(2, self.step, chosen[..., None])
        self.out_logprobs.index_copy_(2, self.step, chosen_logprobs[..., None])
        self.out_entropies.index_copy_(2, self.step, entropies[..., None])
        at_limit = self.step + (self.layout.answer_length + 1) >= self.settings.max_new_tokens  # (1,)
        finished = (chosen == self.eos) | at_limit  # (Q, 1 + N)
        if self.n:
            self.order.advance(drawn, finished[:, 1:], self.step)
        ending = self.greedy_live & finished[:, 0]
        self.greedy_length.copy_(torch.where(ending, self.step + 1, self.greedy_length))
        self.greedy_live.logical_and_(~finished[:, 0])
        self.tokens.copy_(chosen.view(self.tokens.shape))
        self.any_live.copy_(self.order.live.any().view(1) | self.greedy_live.any().view(1))
        self.step.add_(1)

    def run(self) -> list[Finished]:
        cuda = self.tokens.is_cuda
        graphs = cuda and self.options.graphs
        side = _side_stream(self.tokens.device) if cuda else None
        if cuda:
            side.wait_stream(torch.cuda.current_stream())
        context = torch.cuda.stream(side) if cuda else nullcontext()
        with context:
            self._loop(graphs, side)
        if cuda:
            torch.cuda.current_stream().wait_stream(side)
        return self._finished()

    def _loop(self, use_graphs: bool, side) -> None:
        captured: dict[int, torch.cuda.CUDAGraph] = {}
        pool = None
        lag = self.options.check_lag if side is not None else 0
        flags = [torch.ones(1, dtype=torch.bool, pin_memory=True) for _ in range(lag + 1)] if side is not None else []
        events = [torch.cuda.Event() for _ in flags]
        for t in range(self.steps):
            width = min(self._round(t + 1), self.steps)
            if width > self.forward.capacity:
                self.forward.grow(min(self.steps, max(width, 2 * self.forward.capacity)))
                captured.clear()  # the graphs read the old buffers
                pool = None  # their pool goes with them: the next graph starts a fresh one
            if use_graphs and t >= self.options.eager_steps:
                if width not in captured:
                    captured[width] = _capture(lambda w=width: self._step(w), pool)
                    pool = captured[width].pool() if pool is None else pool
                captured[width].replay()
            else:
                self._step(width)
            self.steps_run = t + 1
            if side is None:
                if not bool(self.any_live):
                    break
                continue
            slot = t % len(flags)
            flags[slot].copy_(self.any_live, non_blocking=True)
            events[slot].record()
            if t >= lag:
                earlier = (t - lag) % len(flags)
                events[earlier].synchronize()
                if not bool(flags[earlier]):
                    break

    def _finished(self) -> list[Finished]:
        steps = self.steps_run
        tokens = self.out_tokens[:, :, :steps].tolist()  # (Q, 1 + N, steps)
        logprobs = self.out_logprobs[:, :, :steps].tolist()
        entropies = self.out_entropies[:, :, :steps].tolist()
        greedy_length = self.greedy_length.tolist()
        finish_step = self.order.finish_step.tolist()
        sample_order = self.order.finished_in_order()
        out = []
        for q, question in enumerate(self.layout.questions):
            if question is None:
                continue
            rows = [(0, greedy_length[q])] if self.layout.greedy_live[q] else []
            rows += [(1 + j, finish_step[q][j] + 1) for j in sample_order[q]]
            for row, length in rows:
                path = self.layout.slot_paths[q * self.width + row]  # slots of question slot q are consecutive
                out.append(Finished(question, path.token_ids + tokens[q][row][:length],
                                    path.token_logprobs + logprobs[q][row][:length],
                                    path.token_entropies + entropies[q][row][:length], row == 0))
        return out


def _capture(step, pool) -> torch.cuda.CUDAGraph:
    """`step` captured as a graph on the current (side) stream.

    `torch.cuda.graph` would first synchronise the device, collect Python garbage and empty the
    allocator's cache: together about 60 ms, during which the GPU runs dry. Capturing straight
    on the side stream lets the steps already queued there keep the GPU busy meanwhile; the
    captured work runs only at replay, after them.
    """
    graph = torch.cuda.CUDAGraph()
    graph.capture_begin(pool=pool)
    try:
        step()
    finally:
        graph.capture_end()
    return graph


def _attention_backend(name: str):
    if name == "auto":
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {"efficient": SDPBackend.EFFICIENT_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                "math": SDPBackend.MATH}
    return sdpa_kernel([backends[name]])


_SIDE_STREAMS: dict = {}


def _side_stream(device) -> torch.cuda.Stream:
    """One side stream per GPU for the decode (graphs are captured off the default stream), kept so
    that its cuBLAS workspace is allocated once."""
    if device not in _SIDE_STREAMS:
        _SIDE_STREAMS[device] = torch.cuda.Stream(device)
    return _SIDE_STREAMS[device]


def continue_in_rows(model, tree, paths, generators, settings, eos_token_id: int,
                     options: RowOptions | None = None) -> list[Finished]:
    """Decode the tree's live `paths` (last tokens drawn, not yet fed) to their ends, in fixed rows."""
    return RowDecoder(model, tree, paths, generators, settings, eos_token_id, options or RowOptions()).run()
