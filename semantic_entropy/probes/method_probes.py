"""The method-v2 pass's library: the asked object's grounding and the answer-dependent
counterfactuals of `answer_grounding`, for a batch of image groups (POPE questions only: the
object is the noun of "Is there a/an X in the image?", `glsim.object_positions`).

Per batch of G images and Q POPE questions, five language-model calls and two vision calls:

A. the real image, prefix-shared: one prefill of each image's prefix (G rows) with the image
   tokens' hidden states kept at the grounding layers, then one tree step in which each
   question's tokens branch off their image's prefix; it gives the first answer token's
   yes/no mass (a check against stage 1), the object token's hidden states at the grounding
   layers (similarity), and the attention row of the object's last token (the region erased).
   The logit lens reads the prefill's image states: one lm_head over the image tokens per
   question and layer. Both come from `semantic_entropy.probes.grounding` (`logit_lens`: the
   mean over the object's tokens of their log-probability through the final norm and the LM
   head; `patch_similarity`: the cosine of the object's mean token state with each image token).
B. the object's region erased: one row per question and erased fraction, its prompt with the
   image tokens its object attends to most left out (`answer_rows`), F * Q rows.
C. crops: one prefill of each image's prefix under each of the C crops (C * G rows), then one
   tree step with every question on each crop of its image (C * Q branches).

Vision: the G images once, their C * G crops once.

Extra forward passes per question, against stage 1: (1 + C) / questions-per-image prefills of
an image prefix (A and C) plus F prompt-length rows (B) and 1 + C question-length branches; no
decoding. Every field is computed for every POPE question whatever its answer (the measures
pick by answer), so a record does not depend on the greedy answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llava.model.generation import StepRunner
from semantic_entropy.attention.capture import prompt_layout
from semantic_entropy.probes.answer_rows import answer_step_logits, image_row
from semantic_entropy.probes.grounding import logit_lens, patch_similarity
from semantic_entropy.probes.row_capture import QueryRowCollector, hidden_state_capture, row_capture
from semantic_entropy.sampling.prefix_groups import Group
from semantic_entropy.sampling.sampler import Branch, BranchTree, first_token_probs_shared_prefix


@dataclass(frozen=True)
class MethodSettings:
    grounding_layers: tuple[int, ...]  # hidden-state indices as output_hidden_states numbers them (1..L)
    top_k: int  # largest values kept per layer (the measures average the top k' <= top_k)
    attention_layers: tuple[int, int]  # half-open decoder layers whose object-token attention ranks the region
    erase_fractions: tuple[float, ...]  # shares of the image tokens erased
    crop_boxes: tuple[tuple[float, float, float, float], ...]  # (left, top, right, bottom) as fractions


@dataclass
class MethodQuestion:
    question_id: object
    suffix_ids: list[int]  # the prompt's ids after the image slot
    object_tokens: tuple[int, int, int] | None  # glsim.object_positions; None off POPE's template


def crop_grid(scale: float, grid: int) -> tuple[tuple[float, float, float, float], ...]:
    """grid x grid crops of side `scale` (fractions of the width and height), evenly spread, row-major.

    >>> crop_grid(0.5, 2)
    ((0.0, 0.0, 0.5, 0.5), (0.5, 0.0, 1.0, 0.5), (0.0, 0.5, 0.5, 1.0), (0.5, 0.5, 1.0, 1.0))
    >>> crop_grid(0.5, 3)[4]
    (0.25, 0.25, 0.75, 0.75)
    """
    if not 0 < scale < 1 or grid < 1:
        raise ValueError(f"crops need 0 < scale < 1 and grid >= 1, got {scale} and {grid}")
    starts = [0.0] if grid == 1 else [round(i * (1 - scale) / (grid - 1), 10) for i in range(grid)]
    return tuple((x, y, round(x + scale, 10), round(y + scale, 10)) for y in starts for x in starts)


def pixel_box(box: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    """A fractional box in whole pixels (PIL's crop box), at least one pixel wide and high.

    >>> pixel_box((0.25, 0.0, 0.75, 0.5), 200, 100)
    (50, 0, 150, 50)
    """
    left, top = int(round(box[0] * width)), int(round(box[1] * height))
    right, bottom = max(left + 1, int(round(box[2] * width))), max(top + 1, int(round(box[3] * height)))
    return left, top, right, bottom


def erased_count(fraction: float, num_patches: int) -> int:
    """round(fraction * N), at least 1.

    >>> erased_count(0.1, 576), erased_count(0.001, 576)
    (58, 1)
    """
    if not 0 < fraction < 1:
        raise ValueError(f"erase fractions must be in (0, 1), got {fraction}")
    return max(1, round(fraction * num_patches))


def top_values(values: torch.Tensor, k: int) -> list[float]:
    """The k largest of a (N,) tensor, high to low.

    >>> top_values(torch.tensor([0.1, 0.7, 0.3]), 2)
    [0.699999988079071, 0.30000001192092896]
    """
    return values.float().topk(min(k, values.shape[0])).values.tolist()


def _yes_no(probs: torch.Tensor, yes_ids, no_ids) -> dict:
    return {"yes_mass": float(probs[yes_ids].sum()), "no_mass": float(probs[no_ids].sum())}


@torch.inference_mode()
def _real_image_pass(model, groups, features, inputs, image_of, settings, eos_token_id):
    """Pass A: (Q, V) first-token probabilities, {layer: (G, N, D)} image states, {layer: [(n_i, D)]} the
    object tokens' states, (Q', N) the object's last token's attention over the attention layers, for the
    Q' questions with an object."""
    num_layers = model.config.text_config.num_hidden_layers
    prefix_ids = [torch.tensor(g.prefix_ids) for g in groups]
    embeds, mask, positions = model.embed_multimodal(prefix_ids, features)  # (G, T, D)
    image_columns = prompt_layout(prefix_ids, features.shape[1], embeds.shape[1]).image_columns  # (G, N)
    starts, used = [], {}
    for q, row in zip(inputs, image_of):
        starts.append(used.get(row, 0))
        used[row] = used.get(row, 0) + len(q.suffix_ids)
    wanted = [i for i, q in enumerate(inputs) if q.object_tokens is not None]
    object_cols = [starts[i] + inputs[i].object_tokens[1] for i in wanted]  # last object token, within the block
    collector = QueryRowCollector([image_of[i] for i in wanted], object_cols, image_columns, num_layers)
    with hidden_state_capture(model, settings.grounding_layers) as hidden:
        runner = StepRunner(model, embeds, mask, positions)
        index = image_columns.to(embeds.device)[:, :, None].expand(-1, -1, embeds.shape[2])
        image_states = {layer: hidden[layer].gather(1, index) for layer in settings.grounding_layers}  # (G, N, D)
        tree = BranchTree(runner, mask, eos_token_id)
        next_position = runner.next_position.tolist()
        branches = [Branch(row, q.suffix_ids, list(range(next_position[row], next_position[row] + len(q.suffix_ids))), [])
                    for q, row in zip(inputs, image_of)]
        with row_capture(model, collector):
            collector.active = bool(wanted)
            logits, _ = tree.feed(branches)  # (Q, V) at each question's last token
            collector.active = False
        spans = [(image_of[i], starts[i] + inputs[i].object_tokens[0], starts[i] + inputs[i].object_tokens[1] + 1)
                 for i in wanted]  # (row, first, last + 1) of each object's tokens within the block
        object_states = {layer: [hidden[layer][row, a:b] for row, a, b in spans]
                         for layer in settings.grounding_layers}  # [(n_i, D)] per question
    a, b = settings.attention_layers
    attention = collector.image_attention()[:, a:b].mean(dim=1) if wanted else None  # (Q', N)
    return logits.float().softmax(dim=-1), image_states, object_states, attention, wanted


@torch.inference_mode()
def method_batch(model, groups: list[Group], pixel_values: torch.Tensor, crop_pixel_values: torch.Tensor,
                 inputs: list[MethodQuestion], settings: MethodSettings, yes_ids, no_ids, eos_token_id: int) -> list:
    """The `method_probes` field of each question of a batch (None off POPE's template), in group order.

    pixel_values (G, 3, H, W) the groups' images; crop_pixel_values (C * G, 3, H, W) their crops,
    crop-major; inputs: per question, in group order.
    """
    image_of = [row for row, g in enumerate(groups) for _ in g.questions]  # (Q,)
    features = model.encode_images(pixel_values)  # (G, N, D)
    num_patches = features.shape[1]
    num_layers = model.config.text_config.num_hidden_layers
    real, image_states, object_states, attention, wanted = _real_image_pass(
        model, groups, features, inputs, image_of, settings, eos_token_id)
    if not wanted:
        return [None] * len(inputs)

    # B: per question and fraction, the image tokens its object attends to most left out
    rows, erased_of = [], []
    for k, i in enumerate(wanted):
        ranked = attention[k].argsort(descending=True)  # (N,)
        for fraction in settings.erase_fractions:
            kept = ranked[erased_count(fraction, num_patches):].sort().values
            rows.append(image_row(model, groups[image_of[i]].prefix_ids + inputs[i].suffix_ids, features[image_of[i]],
                                  kept))
            erased_of.append(erased_count(fraction, num_patches))
    erased_logits = answer_step_logits(model, rows, [1] * len(rows))  # (1, V) each

    # C: every question on each crop of its image, prefix-shared
    crops = len(settings.crop_boxes)
    crop_features = model.encode_images(crop_pixel_values)  # (C * G, N, D), crop-major
    prefixes = [torch.tensor(g.prefix_ids) for _ in range(crops) for g in groups]
    crop_embeds, crop_mask, crop_positions = model.embed_multimodal(prefixes, crop_features)
    suffixes = [(c * len(groups) + image_of[i], inputs[i].suffix_ids) for i in wanted for c in range(crops)]
    crop_probs = first_token_probs_shared_prefix(model, crop_embeds, crop_mask, crop_positions, suffixes,
                                                 eos_token_id)  # (Q' C, V)

    unembed = model.lm_head.weight[: model.scored_vocab_size]  # (V, D)
    norm = model.model.language_model.norm
    results: list = [None] * len(inputs)
    fractions = len(settings.erase_fractions)
    for k, i in enumerate(wanted):
        row, (first, last, _) = image_of[i], inputs[i].object_tokens
        token_ids = inputs[i].suffix_ids[first : last + 1]  # the object's tokens
        lens, similarity = [], []
        for layer in settings.grounding_layers:
            states = image_states[layer][row]  # (N, D)
            normed = states if layer == num_layers else norm(states)  # the last layer's states are normed
            lens.append(top_values(logit_lens(normed, unembed, torch.tensor(token_ids, device=unembed.device)),
                                  settings.top_k))
            similarity.append(top_values(patch_similarity(object_states[layer][k], states), settings.top_k))
        results[i] = {
            "real_first_token": _yes_no(real[i], yes_ids, no_ids),
            "grounding": {"layers": list(settings.grounding_layers), "object_token_ids": token_ids,
                          "logit_lens_top": lens, "similarity_top": similarity},
            "erased": [{"fraction": f, "hidden_patches": erased_of[k * fractions + j],
                        **_yes_no(erased_logits[k * fractions + j][0].softmax(dim=-1), yes_ids, no_ids)}
                       for j, f in enumerate(settings.erase_fractions)],
            "crops": [{"box": list(box), **_yes_no(crop_probs[k * crops + c], yes_ids, no_ids)}
                      for c, box in enumerate(settings.crop_boxes)],
            "attention_layers": list(settings.attention_layers),
        }
    return results

