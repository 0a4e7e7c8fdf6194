"""Greedy answer plus N exact multinomial samples per question from ONE shared prefill.

After the prefill, a question's greedy path and its N sample paths are grouped by prefix:
a path stands for one distinct prefix and the number k of samples that follow it. At each step
a path draws its k next tokens at once from the model's distribution at that prefix and splits
into one child per distinct token drawn. All paths of a question live in the question's own
batch row, as branches of one tree: each step feeds every live path's newest token at once,
and a 4D attention mask lets each see the shared prompt plus its own earlier tokens only, so
the prompt's KV cache is stored once per question however many answers branch from it. Every sample is therefore drawn
from exactly the distribution that N independent `generate(do_sample=True)` calls would use,
while the work grows with the number of distinct answers instead of N (POPE answers are a
token or two, so a question costs about one prefill).

Long answers: once the answers outlive a fed token or spread over many paths, the live paths
can be handed to `row_decoder`, which grows each answer in a fixed row of its own with all
bookkeeping on the device (CUDA graphs, no host synchronisation per step). It keeps the draw
order below, so the answers do not depend on where the handover happens.

Randomness: each question owns a CPU torch.Generator seeded from (base seed, question_id).
Draws are uniform numbers from it, mapped through the row's cumulative distribution, taken in
a fixed order of that question's rows, so samples do not depend on batch size, order,
sharding or resumption.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from llava.model.generation import StepRunner
from llava.model.slot_forward import supports_slot_forward
from semantic_entropy.sampling.draws import draw_tokens, sampling_logits  # also imported from here
from semantic_entropy.sampling.row_decoder import RowOptions, continue_in_rows


@dataclass(frozen=True)
class SamplingSettings:
    num_samples: int = 10
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    max_new_tokens: int = 128

    def __post_init__(self):
        if self.num_samples < 0:
            raise ValueError("num_samples must be >= 0")
        if self.temperature <= 0:
            raise ValueError("the sampling temperature must be > 0 (samples are never silently greedy)")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError("top_k must be >= 1 or None")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1] or None")


@dataclass(frozen=True)
class Handover:
    """When the tree sampler hands its live paths to the row decoder (`row_decoder`).

    After `after_steps` answer tokens were fed through the tree, or as soon as the live paths
    number `paths_per_question` per question: POPE's short answers end in the tree, long or
    diverging ones continue one row per answer.
    """

    after_steps: int = 1
    paths_per_question: float = 4.0
    options: RowOptions = field(default_factory=RowOptions)

    def due(self, step: int, live_paths: int, questions: int) -> bool:
        return step >= self.after_steps or live_paths >= self.paths_per_question * questions


def default_engine(model, device) -> Handover | None:
    """The row decoder on CUDA for a Llama language model, the tree alone elsewhere (the CPU path)."""
    if torch.device(device).type == "cuda" and supports_slot_forward(model):
        return Handover()
    return None


def resolve_engine(engine, model, device) -> Handover | None:
    """engine: "auto", "tree" (never hand over), "rows" (hand over before the first fed token) or a Handover."""
    if engine == "auto":
        return default_engine(model, device)
    if engine == "tree":
        return None
    if engine == "rows":
        return Handover(after_steps=0)
    if isinstance(engine, Handover):
        return engine
    raise ValueError(f"unknown sampling engine {engine!r}")


@dataclass
class Answer:
    """One generated answer; `token_ids` ends with EOS when `ends_with_eos`."""

    token_ids: list[int]
    token_logprobs: list[float]  # log-softmax of the untempered logits at each chosen token
    token_entropies: list[float]  # entropy of the untempered distribution at each step (nats)
    ends_with_eos: bool


@dataclass
class QuestionResult:
    greedy: Answer
    samples: list[Answer]  # num_samples answers, in draw order
    first_token_probs: torch.Tensor  # (V,) untempered probabilities at the first answer position (CPU)
    distinct_answers: int = 0


@dataclass
class _Path:
    """A distinct prefix of one question: the tokens so far and who follows it."""

    question: int  # index of the question in the batch (its generator and result)
    row: int  # batch row holding the question's prompt in the KV cache
    start_position: int  # position id of the first answer token
    token_ids: list[int] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)
    token_entropies: list[float] = field(default_factory=list)
    num_samples: int = 0
    is_greedy: bool = False
    columns: list[int] = field(default_factory=list)  # cache columns holding this path's fed tokens

    def extend(self, token: int, logprob: float, entropy: float, num_samples: int, is_greedy: bool) -> "_Path":
        return _Path(self.question, self.row, self.start_position, self.token_ids + [token],
                     self.token_logprobs + [logprob], self.token_entropies + [entropy], num_samples, is_greedy,
                     list(self.columns))


def _finished(path: _Path, eos_token_id: int, max_new_tokens: int) -> bool:
    return path.token_ids[-1] == eos_token_id or len(path.token_ids) >= max_new_tokens


@dataclass
class Branch:
    """Tokens to feed as one branch of a row's tree: they see the row's prompt, the earlier
    cache `columns` listed, and each other causally."""

    row: int
    tokens: list[int]
    positions: list[int]
    columns: list[int]


class BranchTree:
    """A KV cache whose rows are trees: a prompt, then branches that see only their own ancestors.

    Each `feed` appends one block of columns per row; a query sees the row's prompt columns
    (minus left padding), the earlier columns its branch lists, and its own branch's tokens of
    this block up to itself.
    """

    def __init__(self, runner: StepRunner, prompt_mask: torch.Tensor, pad_token_id: int):
        self.runner = runner
        self.prompt_visible = prompt_mask.bool()  # (B, T)
        self.prompt_columns = prompt_mask.shape[1]
        self.appended = 0
        self.pad_token_id = pad_token_id

    def feed(self, branches: list[Branch]) -> tuple[torch.Tensor, list[list[int]]]:
        """Logits (R, V) at each branch's last token, and the cache columns its tokens now occupy."""
        batch = self.prompt_visible.shape[0]
        starts, used = [], [0] * batch
        for branch in branches:
            starts.append(used[branch.row])
            used[branch.row] += len(branch.tokens)
        width = max(used)
        tokens = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
        positions = torch.zeros((batch, width), dtype=torch.long)
        earlier = torch.zeros((batch, width, self.appended), dtype=torch.bool)
        block = torch.eye(width, dtype=torch.bool).repeat(batch, 1, 1)  # (B, Q, Q): pads see themselves
        for branch, start in zip(branches, starts):
            span = slice(start, start + len(branch.tokens))
            tokens[branch.row, span] = torch.tensor(branch.tokens)
            positions[branch.row, span] = torch.tensor(branch.positions)
            if branch.columns:
                earlier[branch.row, span, [c - self.prompt_columns for c in branch.columns]] = True
            block[branch.row, span, span] = torch.ones(len(branch.tokens), len(branch.tokens), dtype=torch.bool).tril()
        device = self.prompt_visible.device
        visible = torch.cat([
            self.prompt_visible[:, None, :].expand(batch, width, self.prompt_columns),
            earlier.to(device),
            block.to(device),
        ], dim=-1)[:, None]  # (B, 1, Q, T + appended + Q)
        logits = self.runner.step_tree(tokens.to(device), positions.to(device), visible)  # (B, Q, V)
        first_new = self.prompt_columns + self.appended
        self.appended += width
        new_columns = [[first_new + start + i for i in range(len(b.tokens))] for b, start in zip(branches, starts)]
        rows = torch.tensor([b.row for b in branches], device=device)
        last = torch.tensor([start + len(b.tokens) - 1 for b, start in zip(branches, starts)], device=device)
        return logits[rows, last], new_columns


@torch.no_grad()
def sample_batch(model, embeds, attention_mask, position_ids, generators: list[torch.Generator],
                 settings: SamplingSettings, eos_token_id: int, engine="auto") -> list[QuestionResult]:
    """Greedy answer and `settings.num_samples` samples for each prompt of a left-padded batch.

    embeds: (B, T, H); attention_mask, position_ids: (B, T); generators: B CPU generators;
    engine: see `resolve_engine` (the answers are the same; only the speed differs).
    """
    runner = StepRunner(model, embeds, attention_mask, position_ids)
    tree = BranchTree(runner, attention_mask, eos_token_id)
    next_position = runner.next_position.tolist()  # first answer position of each row
    paths = [_Path(q, q, next_position[q], num_samples=settings.num_samples, is_greedy=True)
             for q in range(embeds.shape[0])]
    handover = resolve_engine(engine, model, embeds.device)
    return _decode(tree, paths, runner.logits, generators, settings, eos_token_id, handover)


@torch.no_grad()
def sample_shared_prefix(model, prefix_embeds, prefix_mask, prefix_positions, suffixes: list[tuple[int, list[int]]],
                         generators: list[torch.Generator], settings: SamplingSettings,
                         eos_token_id: int, engine="auto") -> list[QuestionResult]:
    """Like `sample_batch`, for questions that share their prompt's beginning (the image and what precedes it).

    prefix_embeds: (G, T, H) left-padded shared prefixes, one row per group, with their mask and
    positions (G, T); suffixes: per question, (its group row, its own token ids). The prefix is
    computed once per group; each question's tokens extend it as a branch of the group's row.
    """
    runner = StepRunner(model, prefix_embeds, prefix_mask, prefix_positions)
    tree = BranchTree(runner, prefix_mask, eos_token_id)
    next_position = runner.next_position.tolist()
    branches = [Branch(row, ids, list(range(next_position[row], next_position[row] + len(ids))), [])
                for row, ids in suffixes]
    first_logits, columns = tree.feed(branches)  # (Nq, V): distribution of each question's first answer token
    paths = [_Path(q, row, next_position[row] + len(ids), num_samples=settings.num_samples, is_greedy=True,
                   columns=columns[q]) for q, (row, ids) in enumerate(suffixes)]
    handover = resolve_engine(engine, model, prefix_embeds.device)
    return _decode(tree, paths, first_logits, generators, settings, eos_token_id, handover)


def _decode(tree: BranchTree, paths: list[_Path], logits: torch.Tensor, generators, settings,
            eos_token_id: int, handover: Handover | None = None) -> list[QuestionResult]:
    """Grow every question's paths to their ends; logits (R, V) are the paths' next-token logits.

    With a `handover`, the paths still live when it is due continue in the row decoder.
    """
    first_probs = logits.softmax(dim=-1).cpu()  # (Nq, V): one row per question at the start
    questions = len(paths)
    done: list[list[_Path]] = [[] for _ in paths]
    step = 0
    while paths:
        paths = _expand(paths, logits, generators, settings, eos_token_id, done)
        if not paths:
            break
        if handover is not None and handover.due(step, len(paths), questions):
            for answer in continue_in_rows(tree.runner.model, tree, paths, generators, settings, eos_token_id,
                                           handover.options):
                done[answer.question].append(_Path(answer.question, -1, -1, answer.token_ids, answer.token_logprobs,
                                                   answer.token_entropies, 0 if answer.is_greedy else 1,
                                                   answer.is_greedy))
            break
        step += 1
        branches = [Branch(p.row, [p.token_ids[-1]], [p.start_position + len(p.token_ids) - 1], p.columns)
                    for p in paths]
        logits, columns = tree.feed(branches)
        for path, new in zip(paths, columns):
            path.columns = path.columns + new
    return [_assemble(done[q], first_probs[q], eos_token_id) for q in range(len(done))]


def _expand(paths, logits, generators, settings, eos_token_id, done) -> list[_Path]:
    """Draw each path's next tokens and split it; finished children go to `done`, live ones are returned."""
    logprobs = torch.log_softmax(logits, dim=-1)  # untempered
    entropies = -(logprobs.exp() * logprobs.nan_to_num(neginf=0.0)).sum(-1)  # (R,)
    greedy_tokens = logits.argmax(dim=-1)  # (R,)
    draws = _draw_for_paths(paths, logits, generators, settings)  # per path: its k tokens

    chosen = sorted({t for tokens in draws for t in tokens} | set(greedy_tokens.tolist()))
    table_logprobs = logprobs.index_select(1, torch.tensor(chosen, device=logits.device)).tolist()  # (R, C)
    column = {t: c for c, t in enumerate(chosen)}
    entropy_list = entropies.tolist()
    greedy_list = greedy_tokens.tolist()

    live = []
    for r, (path, tokens) in enumerate(zip(paths, draws)):
        counts: dict[int, int] = {}
        for t in tokens:  # children in order of first draw
            counts[t] = counts.get(t, 0) + 1
        if path.is_greedy and greedy_list[r] not in counts:
            counts[greedy_list[r]] = 0
        for token, k in counts.items():
            child = path.extend(token, table_logprobs[r][column[token]], entropy_list[r], k,
                                path.is_greedy and token == greedy_list[r])
            if _finished(child, eos_token_id, settings.max_new_tokens):
                done[child.question].append(child)
            else:
                live.append(child)
    return live


def _draw_for_paths(paths, logits, generators, settings) -> list[list[int]]:
    """k tokens per path (k = its number of samples), each question's uniforms from its generator."""
    counts = [p.num_samples for p in paths]
    if sum(counts) == 0:
        return [[] for _ in paths]
    probs = sampling_logits(logits, settings).double().softmax(dim=-1)  # (R, V)
    cdf = probs.cumsum(dim=-1)
    uniforms = torch.cat([torch.rand(k, generator=generators[p.question], dtype=torch.float64)
                          for p, k in zip(paths, counts)])  # (D,), rows in path order
    row_of_draw = torch.repeat_interleave(torch.arange(len(paths)), torch.tensor(counts))
    tokens = draw_tokens(cdf, row_of_draw.to(cdf.device), uniforms.to(cdf.device)).tolist()
    out, start = [], 0
    for k in counts:
        out.append(tokens[start : start + k])
        start += k
    return out


def _assemble(finished: list[_Path], first_probs: torch.Tensor, eos_token_id: int) -> QuestionResult:
    def answer(path: _Path) -> Answer:
        return Answer(path.token_ids, path.token_logprobs, path.token_entropies, path.token_ids[-1] == eos_token_id)

    greedy = [p for p in finished if p.is_greedy]
    assert len(greedy) == 1, "exactly one greedy path per question"
    samples = [answer(p) for p in finished for _ in range(p.num_samples)]
    distinct = len({tuple(s.token_ids) for s in samples})
    return QuestionResult(answer(greedy[0]), samples, first_probs, distinct)


def first_token_logits_shared_prefix(model, prefix_embeds, prefix_mask, prefix_positions,
                                     suffixes: list[tuple[int, list[int]]], eos_token_id: int) -> torch.Tensor:
    """(Nq, V) masked first-answer-token logits, on the model's device, of questions sharing a prefix.

    Arguments as `sample_shared_prefix`: one prefill per prefix row, one tree step for all
    suffixes, nothing sampled or decoded.
    """
    runner = StepRunner(model, prefix_embeds, prefix_mask, prefix_positions)
    tree = BranchTree(runner, prefix_mask, eos_token_id)
    next_position = runner.next_position.tolist()
    branches = [Branch(row, ids, list(range(next_position[row], next_position[row] + len(ids))), [])
                for row, ids in suffixes]
    return tree.feed(branches)[0]


def first_token_probs_shared_prefix(model, prefix_embeds, prefix_mask, prefix_positions,
                                    suffixes: list[tuple[int, list[int]]], eos_token_id: int) -> torch.Tensor:
    """(Nq, V) first-answer-token probabilities on the CPU: `first_token_logits_shared_prefix`'s,
    softmaxed as `sample_shared_prefix` reports them."""
    return first_token_logits_shared_prefix(model, prefix_embeds, prefix_mask, prefix_positions, suffixes,
                                            eos_token_id).softmax(dim=-1).cpu()
