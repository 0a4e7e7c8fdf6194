"""The probes pass's library: attention-masked and random-masked first-token distributions,
question rewordings and attention statistics of the first answer token's query (see
`semantic_entropy.vision_probes` for what each field means and what it costs)."""


from __future__ import annotations

import math
import re

import torch

from llava.constants import IMAGE_TOKEN_INDEX, POPE_ANSWER_SUFFIX
from llava.conversation import build_prompt
from llava.mm_utils import tokenizer_image_token
from llava.model.generation import StepRunner
from llava.utils import hash_seed
from semantic_entropy.attention.capture import (AnswerAttentionCollector, attention_capture,
                                                decoder_attention_modules, prompt_layout)
from semantic_entropy.sampling.prefix_groups import Group, split_at_image
from semantic_entropy.sampling.sampler import first_token_probs_shared_prefix

MASK_VARIANTS = ("mask_attended", "mask_random")
# POPE's files spell some "an" questions "in the imange?"; both forms are POPE questions.
POPE_QUESTION = re.compile(r"^Is there (an?) (.+) in the (?:image|imange)\?$")
REWORDINGS = {
    "contain": "Does the image contain {article} {name}?",
    "see": "Can you see {article} {name} in the image?",
}


# ---------------------------------------------------------------------------------------------
# Pure pieces
# ---------------------------------------------------------------------------------------------


def reworded_questions(text: str) -> dict[str, str]:
    """The rewordings of a POPE question (suffix kept); {} for any other question.

    >>> reworded_questions("Is there an apple in the image?" + POPE_ANSWER_SUFFIX)["contain"]
    'Does the image contain an apple?\\nAnswer the question using a single word or phrase.'
    >>> reworded_questions("Is there an umbrella in the imange?")["see"]
    'Can you see an umbrella in the image?'
    >>> reworded_questions("What colour is the car?")
    {}
    """
    suffix = POPE_ANSWER_SUFFIX if text.endswith(POPE_ANSWER_SUFFIX) else ""
    match = POPE_QUESTION.match(text[: len(text) - len(suffix)].strip())
    if match is None:
        return {}
    article, name = match.groups()
    return {key: template.format(article=article, name=name) + suffix for key, template in REWORDINGS.items()}


def number_of_masked_patches(num_patches: int, fraction: float) -> int:
    """round(fraction * N), at least 1.

    >>> number_of_masked_patches(576, 0.1)
    58
    """
    if not 0 < fraction < 1:
        raise ValueError(f"--mask-fraction must be in (0, 1), got {fraction}")
    return max(1, round(fraction * num_patches))


def random_patches(question_id, seed: int, num_patches: int, count: int) -> torch.Tensor:
    """(count,) distinct patch indices drawn from the question's own seed (batch-invariant)."""
    generator = torch.Generator().manual_seed(hash_seed(seed, f"mask-random:{question_id}"))
    return torch.randperm(num_patches, generator=generator)[:count]


def hide_image_positions(attention_mask: torch.Tensor, image_columns: torch.Tensor,
                         patches: torch.Tensor) -> torch.Tensor:
    """A copy of the (B, T) mask with the chosen image patches (B, k) of each row set to 0.

    >>> mask = torch.ones(1, 6, dtype=torch.long)
    >>> hide_image_positions(mask, torch.tensor([[2, 3, 4]]), torch.tensor([[0, 2]])).tolist()
    [[1, 1, 0, 1, 0, 1]]
    """
    hidden = attention_mask.clone()
    hidden.scatter_(1, image_columns.gather(1, patches.to(image_columns.device)), 0)
    return hidden


def normalised_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Entropy of each row of (B, N) non-negative weights (renormalised), divided by ln N.

    >>> normalised_entropy(torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])).tolist()
    [1.0, 0.0]
    """
    p = weights / weights.sum(dim=-1, keepdim=True)
    return -(p * torch.log(p.clamp_min(1e-30))).sum(dim=-1) / math.log(weights.shape[-1]) + 0.0  # no -0.0


def yes_no_masses(probs: torch.Tensor, yes_ids, no_ids) -> list[dict]:
    """{"yes_mass", "no_mass"} of each row of (B, V) first-token probabilities."""
    yes, no = probs[:, yes_ids].sum(dim=-1).tolist(), probs[:, no_ids].sum(dim=-1).tolist()
    return [{"yes_mass": y, "no_mass": n} for y, n in zip(yes, no)]


def reworded_suffixes(question_text: str, prefix_ids: list[int], tokenizer, conv_mode: str) -> dict[str, list[int]]:
    """{rewording: its prompt's token ids after the image} for a question whose prompt starts with `prefix_ids`."""
    suffixes = {}
    for name, text in reworded_questions(question_text).items():
        ids = tokenizer_image_token(build_prompt(text, conv_mode), tokenizer, IMAGE_TOKEN_INDEX)
        prefix, suffix = split_at_image(ids)
        if prefix != prefix_ids:
            raise ValueError(f"rewording {name!r} changes the prompt before the image: {text!r}")
        suffixes[name] = suffix
    return suffixes


# ---------------------------------------------------------------------------------------------
# One batch
# ---------------------------------------------------------------------------------------------


@torch.inference_mode()
def probe_batch(model, groups: list[Group], pixel_values: torch.Tensor, rewordings: list[dict], layers,
                mask_fraction: float, seed: int, yes_ids, no_ids, eos_token_id: int) -> list[dict]:
    """The probe fields of each question of a batch of image groups, in group order.

    groups: the questions of one image each (`prefix_groups.Group`), pixel_values (G, 3, H, W)
    their images; rewordings: per question, {rewording name: its token ids after the image}.
    Every question gets its own capture and masked prefills (hiding image keys changes every
    later position); the rewordings share their image's prefix (one prefill per image, one tree
    step for all), as stage 1 does.
    """
    features = model.encode_images(pixel_values)  # (G, N, hidden): each image once
    questions = [q for g in groups for q in g.questions]
    image_of = [index for index, g in enumerate(groups) for _ in g.questions]  # (Q,) group row of each question
    input_ids = [torch.tensor(g.prefix_ids + suffix) for g in groups for suffix in g.suffix_ids]
    embeds, mask, positions = model.embed_multimodal(input_ids, features[image_of])  # (Q, T, hidden)
    layout = prompt_layout(input_ids, features.shape[1], embeds.shape[1])
    collector = AnswerAttentionCollector(layout, len(decoder_attention_modules(model)), embeds.device)
    with attention_capture(model, collector):
        real = StepRunner(model, embeds, mask, positions)
        collector.end_step()
    attention = collector.image_steps[0][:, list(layers)]  # (Q, L', H, N) on the CPU
    image_map = attention.mean(dim=(1, 2))  # (Q, N)
    num_patches = image_map.shape[1]
    count = number_of_masked_patches(num_patches, mask_fraction)
    attended = image_map.topk(count, dim=1).indices  # (Q, k)
    drawn = torch.stack([random_patches(q["question_id"], seed, num_patches, count) for q in questions])  # (Q, k)
    columns = layout.image_columns.to(mask.device)  # (Q, N)
    hidden = {"mask_attended": attended, "mask_random": drawn}
    variants = {name: yes_no_masses(StepRunner(model, embeds, hide_image_positions(mask, columns, patches),
                                               positions).logits.float().softmax(dim=-1), yes_ids, no_ids)
                for name, patches in hidden.items()}

    reworded: list[dict] = [{} for _ in questions]
    suffixes = [(image_of[q], ids) for q, per in enumerate(rewordings) for ids in per.values()]
    if suffixes:
        prefix_embeds, prefix_mask, prefix_positions = model.embed_multimodal(
            [torch.tensor(g.prefix_ids) for g in groups], features)
        probs = first_token_probs_shared_prefix(model, prefix_embeds, prefix_mask, prefix_positions, suffixes,
                                                eos_token_id)  # (S, V)
        masses = iter(yes_no_masses(probs, yes_ids, no_ids))
        for q, per in enumerate(rewordings):
            for name in per:
                reworded[q][name] = next(masses)

    real_masses = yes_no_masses(real.logits.float().softmax(dim=-1), yes_ids, no_ids)
    top_share = image_map.gather(1, attended).sum(dim=1) / image_map.sum(dim=1)  # (Q,)
    entropy = normalised_entropy(image_map)  # (Q,)
    image_share = attention.sum(dim=-1).mean(dim=(1, 2))  # (Q,) mass on the image per head and layer
    return [
        {
            "image_variants": {name: variants[name][i] for name in MASK_VARIANTS},
            "question_variants": reworded[i],
            "attention_probe": {"image_share": float(image_share[i]), "top_share": float(top_share[i]),
                                "map_entropy": float(entropy[i]), "masked_patches": count,
                                "real_yes_mass": real_masses[i]["yes_mass"]},
        }
        for i in range(len(questions))
    ]


def merge_probe(record: dict, probe: dict) -> dict:
    """The generations record with the probe's fields added (stage 1's image variants kept)."""
    return {
        **record,
        "image_variants": {**(record.get("image_variants") or {}), **probe["image_variants"]},
        "question_variants": {**(record.get("question_variants") or {}), **probe["question_variants"]},
        "attention_probe": probe["attention_probe"],
    }
