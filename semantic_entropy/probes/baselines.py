"""The baseline pass's library: every published detector's inputs for a batch of image groups.

Per batch of G images and Q questions, seven language-model calls and two vision calls:

A. the real image, prefix-shared: one prefill of each image's prefix (G rows), then one tree
   step in which each question's own tokens and its greedy answer (teacher-forced) branch off
   their image's prefix. It gives the answer steps' logits (VAUQ's H), the attention rows of
   the first answer token's query and of the answer tokens' queries (SVAR, VAUQ's ranking),
   and the hidden states GLSim reads (the image at the last layer from the prefill; the
   prompt's last position and the object's token from the tree step).
B. VAUQ's hidden image tokens: one row per question, its prompt and answer with its most
   attended image tokens left out (`answer_rows`: the same as masking them), Q rows, after one
   run of the text before the image whose KV cache they all read (1 row).
C. no image: one row per distinct text (the prompt without its image and the answer), at most Q
   rows (the no-image prior's first step and the no-image VAUQ variant's H).
D. VL-Uncertainty: one prefill of each image under each of the R blur radii (R * G rows), then
   one tree step with each question's R rephrasings, the r-th on the r-th blurred image, and,
   when the blur-only ablation is asked for, its own wording on each blurred image.

Vision: the G images once, their R * G blurred versions once.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch

from llava.model.generation import StepRunner
from llava.utils import hash_seed
from semantic_entropy.attention.capture import prompt_layout
from semantic_entropy.probes import glsim, vauq, vl_uncertainty
from semantic_entropy.probes.answer_rows import (answer_step_logits, answer_step_logits_after_prefix,
                                                 hidden_image_rows, text_row)
from semantic_entropy.probes.row_capture import QueryRowCollector, hidden_state_capture, row_capture
from semantic_entropy.sampling.prefix_groups import Group
from semantic_entropy.sampling.sampler import Branch, BranchTree, first_token_logits_shared_prefix


@dataclass(frozen=True)
class BaselineSettings:
    vauq_mask_ratio: float
    vauq_alpha: float
    vauq_layers: tuple[int, int]  # half-open, this model's layers
    svar_layers: tuple[int, int]
    glsim_top_k: int
    blur_radii: tuple[float, ...]
    vl_temperature: float
    seed: int
    # Our ablation, not a published detector: each question's own wording on the blurred images
    # too (one more tree branch per radius).
    vl_blur_only_ablation: bool = False


@dataclass
class QuestionInputs:
    """What the pass needs of one question besides its image group."""

    question_id: object
    suffix_ids: list[int]  # the prompt's ids after the image slot
    answer_ids: list[int]  # the greedy answer's ids (its EOS included when generated)
    no_image_ids: list[int]  # the prompt without the image
    object_tokens: tuple[int, int, int] | None  # glsim.object_positions, None off POPE's template
    rephrased_suffixes: list[list[int]] | None  # per blur radius, None off POPE's template


class PhaseClock:
    """Seconds and tokens per phase of `baseline_batch`, for benchmarks: the device is synchronised
    around each phase, so only pass one when timing."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = {}
        self.tokens: dict[str, int] = {}

    @contextlib.contextmanager
    def phase(self, name: str, tokens: int = 0):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        self.tokens[name] = self.tokens.get(name, 0) + tokens


def _phase(clock: PhaseClock | None, name: str, tokens: int = 0):
    return clock.phase(name, tokens) if clock is not None else contextlib.nullcontext()


class _KeepLogits:
    """A StepRunner stand-in for BranchTree that keeps the (B, Q, V) logits of its tree step."""

    def __init__(self, runner: StepRunner):
        self.runner = runner
        self.logits = None

    def step_tree(self, *args):
        self.logits = self.runner.step_tree(*args)
        return self.logits


def _branch_starts(rows: list[int], lengths: list[int]) -> list[int]:
    """Where each branch starts in its row's block: BranchTree lays a row's branches out in order.

    >>> _branch_starts([0, 1, 0], [3, 2, 4])
    [0, 0, 3]
    """
    used: dict[int, int] = {}
    starts = []
    for row, length in zip(rows, lengths):
        starts.append(used.get(row, 0))
        used[row] = used.get(row, 0) + length
    return starts


def _first_step_yes_no(step_logits: list[torch.Tensor], yes_ids, no_ids) -> list[dict]:
    """Yes and no mass of each question's first answer step, from its (n_i, V) logits, in one go.

    >>> inf = float("inf")
    >>> _first_step_yes_no([torch.zeros(1, 4), torch.tensor([[0.0, -inf, 0.0, -inf], [1.0, 2.0, 3.0, 4.0]])],
    ...                    [0], [1, 2])
    [{'yes_mass': 0.25, 'no_mass': 0.5}, {'yes_mass': 0.5, 'no_mass': 0.5}]
    """
    first = torch.stack([x[0] for x in step_logits]).softmax(dim=-1)  # (Q, V)
    index = torch.tensor(yes_ids, device=first.device), torch.tensor(no_ids, device=first.device)
    yes, no = (first.index_select(1, i).sum(dim=-1).tolist() for i in index)
    return [{"yes_mass": y, "no_mass": n} for y, n in zip(yes, no)]


def _entropies_per_question(step_logits: list[torch.Tensor]) -> list[list[float]]:
    """vauq.step_entropies_bits of each question's (n_i, V) logits, computed in one go.

    >>> _entropies_per_question([torch.tensor([[0.0, 0.0, float("-inf"), float("-inf")]]), torch.zeros(2, 4)])
    [[1.0], [2.0, 2.0]]
    """
    flat = vauq.step_entropies_bits(torch.cat(step_logits))
    ends = torch.tensor([len(x) for x in step_logits]).cumsum(0).tolist()
    return [flat[end - len(x) : end] for x, end in zip(step_logits, ends)]


@torch.inference_mode()
def _real_image_pass(model, groups, features, inputs, image_of, eos_token_id):
    """Pass A: (answer-step logits per question (n, V) on the device, (S, L, N) attention of the chosen rows, hidden
    states of the tree step {L-1, L}: (G, W, D), image states at the last layer (G, N, D), starts)."""
    num_layers = model.config.text_config.num_hidden_layers
    if num_layers < 2:
        raise ValueError("GLSim reads the last two layers; the model has one")
    prefix_ids = [torch.tensor(g.prefix_ids) for g in groups]
    embeds, mask, positions = model.embed_multimodal(prefix_ids, features)  # (G, T, D)
    image_columns = prompt_layout(prefix_ids, features.shape[1], embeds.shape[1]).image_columns  # (G, N)
    tokens = [q.suffix_ids + q.answer_ids for q in inputs]
    starts = _branch_starts(image_of, [len(t) for t in tokens])
    rows, cols = [], []  # per question: the first answer token's query, then each answer token's
    for q, start, row in zip(inputs, starts, image_of):
        first = start + len(q.suffix_ids) - 1
        rows += [row] * (1 + len(q.answer_ids))
        cols += list(range(first, first + 1 + len(q.answer_ids)))
    collector = QueryRowCollector(rows, cols, image_columns, num_layers)
    with hidden_state_capture(model, [num_layers - 1, num_layers]) as hidden:
        runner = StepRunner(model, embeds, mask, positions)
        index = image_columns.to(embeds.device)[:, :, None].expand(-1, -1, embeds.shape[2])
        image_states = hidden[num_layers].gather(1, index)  # (G, N, D)
        keeper = _KeepLogits(runner)
        tree = BranchTree(keeper, mask, eos_token_id)
        next_position = runner.next_position.tolist()
        branches = [Branch(row, ids, list(range(next_position[row], next_position[row] + len(ids))), [])
                    for row, ids in zip(image_of, tokens)]
        with row_capture(model, collector):
            collector.active = True
            _, columns = tree.feed(branches)
            collector.active = False
        states = {layer: hidden[layer] for layer in (num_layers - 1, num_layers)}  # (G, W, D)
    assert [c[0] - mask.shape[1] for c in columns] == starts, "branch layout differs from BranchTree's"
    step_logits = [keeper.logits[row, start + len(q.suffix_ids) - 1 : start + len(t) - 1]
                   for q, t, start, row in zip(inputs, tokens, starts, image_of)]  # (n, V) float32 each, on the device
    return step_logits, collector.image_attention(), states, image_states, starts


def _glsim_similarities(model, states, image_states, rows: list[int], prompt_last: list[int],
                        object_last: list[int], tokens: list[int], top_k: int) -> tuple[list[float], list[float]]:
    """GLSim's global and local similarity of a batch's questions (`glsim.cosine` and
    `glsim.local_similarity` of each, computed together).

    states: {L-1, L: (G, W, D)} the tree step's hidden states; image_states (G, N, D) the image at
    the last layer; per question: its image row, the tree columns of the prompt's last token and of
    the object's last token, and the object's token id.
    """
    last = model.config.text_config.num_hidden_layers
    device = image_states.device
    row, prompt_col, object_col = (torch.tensor(x, device=device) for x in (rows, prompt_last, object_last))
    # logit lens: log softmax(lm_head(h_L(p)))[token] at each image position p; normaliser once per image
    normalisers = torch.stack([torch.logsumexp(model.lm_head(image).float()[:, : model.scored_vocab_size], dim=-1)
                               for image in image_states])  # (G, N)
    token_rows = model.lm_head.weight[torch.tensor(tokens, device=device)]  # (Q, D)
    token_logits = torch.einsum("qnd,qd->qn", image_states[row], token_rows).float()  # (Q, N)
    log_probs = token_logits - normalisers[row]  # (Q, N)
    top = log_probs.topk(min(top_k, log_probs.shape[1]), dim=-1).indices  # (Q, K)
    object_states = states[last - 1][row, object_col]  # (Q, D)
    local = glsim.cosine(object_states[:, None, :], image_states[row[:, None], top]).mean(dim=-1)  # (Q,)
    global_ = glsim.cosine(states[last - 1][row, prompt_col], states[last][row, object_col])  # (Q,)
    return global_.tolist(), local.tolist()


def _vl_uncertainty_pass(model, groups, blurred_pixel_values, inputs, image_of, settings, yes_ids, no_ids,
                         eos_token_id) -> dict[int, dict]:
    """Pass D: {question index: its VL-Uncertainty fields} for the questions with rephrasings."""
    radii = len(settings.blur_radii)
    wanted = [i for i, q in enumerate(inputs) if q.rephrased_suffixes is not None]
    if not wanted:
        return {}
    features = model.encode_images(blurred_pixel_values)  # (R * G, N, D), radius-major
    prefixes = [torch.tensor(g.prefix_ids) for _ in range(radii) for g in groups]
    embeds, mask, positions = model.embed_multimodal(prefixes, features)
    # per question: its R rephrasings, then (the blur-only ablation) its own wording, on the R blurred images
    parts = 2 if settings.vl_blur_only_ablation else 1
    suffixes = [(r * len(groups) + image_of[i], ids) for i in wanted
                for ids_per_radius in (inputs[i].rephrased_suffixes, [inputs[i].suffix_ids] * radii)[:parts]
                for r, ids in enumerate(ids_per_radius)]
    probs = first_token_logits_shared_prefix(model, embeds, mask, positions, suffixes,
                                             eos_token_id).softmax(dim=-1)  # (P R |wanted|, V), on the device
    all_masses = vl_uncertainty.cluster_masses(probs, yes_ids, no_ids, settings.vl_temperature)  # (P R |wanted|, 3)
    fields = {}
    for k, i in enumerate(wanted):
        masses, *image_only = (all_masses[(parts * k + part) * radii : (parts * k + part + 1) * radii]
                               for part in range(parts))
        generator = torch.Generator().manual_seed(hash_seed(settings.seed, f"vl-uncertainty:{inputs[i].question_id}"))
        uniforms = torch.rand(radii, generator=generator, dtype=torch.float64).tolist()
        fields[i] = {"temperature": settings.vl_temperature, "blur_radii": list(settings.blur_radii),
                     "cluster_masses": [list(m) for m in masses],
                     "answers": vl_uncertainty.draw_clusters(masses, uniforms)}
        if image_only:
            fields[i]["image_only_cluster_masses"] = [list(m) for m in image_only[0]]
    return fields


@torch.inference_mode()
def baseline_batch(model, groups: list[Group], pixel_values: torch.Tensor, blurred_pixel_values: torch.Tensor,
                   inputs: list[QuestionInputs], settings: BaselineSettings, yes_ids, no_ids,
                   eos_token_id: int, clock: PhaseClock | None = None) -> list[dict]:
    """The `baseline_probes` field of each question of a batch of image groups, in group order.

    pixel_values (G, 3, H, W) the groups' images; blurred_pixel_values (R * G, 3, H, W) the same
    under each blur radius, radius-major; inputs: per question, in group order.
    """
    image_of = [row for row, g in enumerate(groups) for _ in g.questions]  # (Q,)
    with _phase(clock, "vision"):
        features = model.encode_images(pixel_values)  # (G, N, D): each image once
    num_patches = features.shape[1]
    real_tokens = sum(len(g.prefix_ids) - 1 + num_patches for g in groups) + sum(
        len(q.suffix_ids) + len(q.answer_ids) for q in inputs)
    with _phase(clock, "A_real_image", real_tokens):
        step_logits, attention, states, image_states, starts = _real_image_pass(
            model, groups, features, inputs, image_of, eos_token_id)

    # VAUQ: rank the image tokens by the answer rows' attention, then leave the top share out.
    count = vauq.hidden_patch_count(settings.vauq_mask_ratio, num_patches)
    a, b = settings.vauq_layers
    with _phase(clock, "B_rows_built"):
        kept_positions = _kept_after_hiding(attention[:, a:b], [len(q.answer_ids) for q in inputs], count)
    masked_logits = _hidden_image_logits(model, groups, features, inputs, image_of, kept_positions, clock)
    # Without the image a row depends on its text alone, and POPE asks the same question of many
    # images: each distinct (prompt, answer) row is run once.
    distinct = {tuple(q.no_image_ids + q.answer_ids[:-1]): len(q.answer_ids) for q in inputs}
    no_image_rows = [text_row(model, list(ids)) for ids in distinct]
    with _phase(clock, "C_no_image", sum(e.shape[0] for e, _ in no_image_rows)):
        distinct_logits = dict(zip(distinct, answer_step_logits(model, no_image_rows, list(distinct.values()))))
    no_image_logits = [distinct_logits[tuple(q.no_image_ids + q.answer_ids[:-1])] for q in inputs]
    radii = len(settings.blur_radii)
    vl_tokens = radii * sum(len(g.prefix_ids) - 1 + num_patches for g in groups) + sum(
        sum(map(len, q.rephrased_suffixes)) + settings.vl_blur_only_ablation * radii * len(q.suffix_ids)
        for q in inputs if q.rephrased_suffixes)
    with _phase(clock, "D_vl_uncertainty", vl_tokens):
        vl_fields = _vl_uncertainty_pass(model, groups, blurred_pixel_values, inputs, image_of, settings, yes_ids,
                                         no_ids, eos_token_id)

    with _phase(clock, "E_scores"):
        return _fields(model, inputs, image_of, starts, step_logits, attention, states, image_states, masked_logits,
                       no_image_logits, vl_fields, settings, count, yes_ids, no_ids)


def _kept_after_hiding(attention: torch.Tensor, answer_lengths: list[int], count: int) -> torch.Tensor:
    """(Q, N - count) sorted image positions each question keeps once VAUQ hides its `count` most
    attended ones (`vauq.most_attended_patches`, computed together for answers of equal length).

    attention: (S, L', N) the selected rows of pass A in the ranking layers: per question its first
    answer token's query, then one row per answer token.

    >>> rows = torch.tensor([[[9.0, 9, 9]], [[0.1, 0.5, 0.2]], [[9.0, 9, 9]], [[0.3, 0.1, 0.4]], [[0.5, 0.1, 0.1]]])
    >>> _kept_after_hiding(rows, [1, 2], 1).tolist()  # means (.1 .5 .2) and (.4 .1 .25)
    [[0, 2], [1, 2]]
    """
    num_patches = attention.shape[-1]
    starts, at = [], 0
    for n in answer_lengths:
        starts.append(at + 1)  # the answer tokens' rows follow the first answer token's query
        at += 1 + n
    kept = torch.ones(len(answer_lengths), num_patches, dtype=torch.bool)  # (Q, N)
    for n in sorted(set(answer_lengths)):
        questions = [i for i, length in enumerate(answer_lengths) if length == n]
        index = torch.tensor([starts[i] + j for i in questions for j in range(n)])
        rows = attention[index].reshape(len(questions), n, *attention.shape[1:])  # (Qn, n, L', N)
        top = rows.mean(dim=(1, 2)).topk(count, dim=-1).indices  # (Qn, count)
        kept[torch.tensor(questions)[:, None], top] = False
    return kept.nonzero()[:, 1].reshape(len(answer_lengths), num_patches - count)


def _hidden_image_logits(model, groups, features, inputs, image_of, kept_positions, clock) -> list[torch.Tensor]:
    """Pass B: each question's answer-step logits (n, V) with only its `kept_positions` (Q, M) of
    the image, its rows run after one shared run of each distinct text before the image."""
    by_prefix: dict[tuple[int, ...], list[int]] = {}
    for i, row in enumerate(image_of):
        by_prefix.setdefault(tuple(groups[row].prefix_ids[:-1]), []).append(i)  # prefix_ids ends with the slot
    logits: list[torch.Tensor | None] = [None] * len(inputs)
    for prefix, chosen in by_prefix.items():
        rows = hidden_image_rows(model, features, [image_of[i] for i in chosen], kept_positions[chosen], len(prefix),
                                 [inputs[i].suffix_ids + inputs[i].answer_ids[:-1] for i in chosen])
        with _phase(clock, "B_vauq_hidden", len(prefix) + sum(e.shape[0] for e, _ in rows)):
            out = answer_step_logits_after_prefix(model, list(prefix), rows,
                                                  [len(inputs[i].answer_ids) for i in chosen])
        for i, x in zip(chosen, out):
            logits[i] = x
    return logits


def _fields(model, inputs, image_of, starts, step_logits, attention, states, image_states, masked_logits,
            no_image_logits, vl_fields, settings, count, yes_ids, no_ids) -> list[dict]:
    """Each question's `baseline_probes` field from the batch's passes (reduced on the device,
    moved to the host once per kind)."""
    entropies, masked_entropies, no_image_entropies = (_entropies_per_question(x) for x in
                                                       (step_logits, masked_logits, no_image_logits))
    real_masses = _first_step_yes_no(step_logits, yes_ids, no_ids)
    no_image_masses = _first_step_yes_no(no_image_logits, yes_ids, no_ids)
    on_template = [i for i, q in enumerate(inputs) if q.object_tokens is not None]
    glsim_fields = {}
    if on_template:
        similarities = _glsim_similarities(
            model, states, image_states, [image_of[i] for i in on_template],
            [starts[i] + len(inputs[i].suffix_ids) - 1 for i in on_template],
            [starts[i] + inputs[i].object_tokens[1] for i in on_template],
            [inputs[i].object_tokens[2] for i in on_template], settings.glsim_top_k)
        glsim_fields = {i: {"global": g, "local": local, "object_token_id": inputs[i].object_tokens[2],
                            "top_k": settings.glsim_top_k} for i, g, local in zip(on_template, *similarities)}
    results, selected = [], 0
    for i, q in enumerate(inputs):
        first_row = attention[selected]  # (L, N): the first answer token's query
        selected += 1 + len(q.answer_ids)
        results.append({
            "real_first_token": real_masses[i],
            "vauq": {"mask_ratio": settings.vauq_mask_ratio, "alpha": settings.vauq_alpha,
                     "layers": list(settings.vauq_layers), "hidden_patches": count,
                     "entropies": entropies[i], "masked_entropies": masked_entropies[i],
                     "no_image_entropies": no_image_entropies[i]},
            "attention_ratio": {"layer_image_shares": first_row.sum(dim=-1).tolist(),
                                "layers": list(settings.svar_layers)},
            "glsim": glsim_fields.get(i),
            "no_image": no_image_masses[i],
            "vl_uncertainty": vl_fields.get(i),
        })
    return results
