"""The tree sampler's draw order, kept when every sample has a row of its own.

The tree sampler (`sampler._expand`) draws, at every step, the k next tokens of each live path
of a question from the question's generator, paths in order, and orders a path's children by
their first draw; finished children leave the list in that order. With one row per sample the
same order is a rank per sample: a path's samples hold consecutive ranks, so sample j takes
the question's uniform number `offset + rank[j]`, and after the draw the samples are re-sorted
by (first rank of their new prefix group, old rank). Each question thus consumes exactly the
uniforms the tree sampler would, in the same order, and the outputs are the same.

All updates are tensor operations of fixed shape, with no host synchronisation, so they run
inside a captured CUDA graph. Shapes: Q question slots, N samples per question.
"""

from __future__ import annotations

import torch


def predraw_uniforms(generators: list, count: int, device) -> torch.Tensor:
    """(Q, count) float64: each generator's next `count` uniforms (None: a question slot with no question).

    A CPU generator's float64 draws are one stream however they are split, so drawing them here
    gives the numbers the tree sampler would have drawn one step at a time.
    """
    rows = [torch.rand(count, generator=g, dtype=torch.float64) if g is not None
            else torch.zeros(count, dtype=torch.float64) for g in generators]
    return torch.stack(rows).to(device)


class SampleOrder:
    """Ranks, prefix groups and stream offsets of every question's N sample rows."""

    def __init__(self, live: torch.Tensor, rank: torch.Tensor, group: torch.Tensor):
        self.live = live.clone()  # (Q, N) bool: the sample is still growing
        self.rank = rank.clone()  # (Q, N) long: its place among the question's live samples
        self.group = group.clone()  # (Q, N) long: equal for samples with the same prefix so far
        self.offset = torch.zeros(live.shape[0], dtype=torch.long, device=live.device)  # (Q,) uniforms used
        self.finish_step = torch.full_like(rank, -1)  # (Q, N) step of the draw that ended the sample
        self.finish_rank = torch.full_like(rank, -1)  # (Q, N) its place among the children of that step

    def uniforms(self, stream: torch.Tensor) -> torch.Tensor:
        """(Q, N) float64: each sample's uniform for this step from the (Q, U) pre-drawn streams."""
        index = (self.offset[:, None] + self.rank).clamp(0, stream.shape[1] - 1)  # dead rows: any valid index
        return stream.gather(1, index)

    def advance(self, tokens: torch.Tensor, finished: torch.Tensor, step: torch.Tensor) -> None:
        """Record this step's draws: tokens (Q, N), finished (Q, N) bool, step (1,) long; in place."""
        questions, n = tokens.shape
        live = self.live
        same = (live[:, :, None] & live[:, None, :] & (self.group[:, :, None] == self.group[:, None, :])
                & (tokens[:, :, None] == tokens[:, None, :]))  # (Q, N, N): same prefix after this draw
        last = n * n + n  # sorts after every live sample
        first = torch.where(same, self.rank[:, None, :], last).amin(-1)  # (Q, N): first rank of the new group
        order = torch.where(live, first * n + self.rank, last).argsort(dim=1, stable=True)  # (Q, N) rows by place
        places = torch.arange(n, device=tokens.device).expand(questions, n)
        place = torch.empty_like(order).scatter_(1, order, places)  # (Q, N) place among this step's children
        ending = live & finished
        self.finish_step.copy_(torch.where(ending, step, self.finish_step))
        self.finish_rank.copy_(torch.where(ending, place, self.finish_rank))
        still = live & ~finished
        compact = still.gather(1, order).long().cumsum(1) - 1  # (Q, N) rank among the rows still growing
        self.rank.copy_(torch.empty_like(order).scatter_(1, order, compact))
        self.offset.add_(live.sum(1))
        self.group.copy_(first)
        self.live.copy_(still)

    def finished_in_order(self) -> list[list[int]]:
        """Per question, its finished sample rows in the order the tree sampler lists them (host lists)."""
        n = self.finish_step.shape[1]
        if n == 0:
            return [[] for _ in range(self.finish_step.shape[0])]
        key = torch.where(self.finish_step >= 0, self.finish_step * n + self.finish_rank, -1).cpu()
        return [[j for j in sorted(range(n), key=lambda j: int(row[j])) if row[j] >= 0] for row in key]
