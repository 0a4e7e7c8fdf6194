"""Probes of how an answer depends on what LLaVA looks at and on the question's wording.

python -m semantic_entropy.vision_probes --model-path M --image-folder I --generations-file G \
    --output-file G2 [--mask-fraction 0.1] [--layers a:b] [--seed 0]

A later pass over stage 1's generations (like `semantic_entropy.p_true`). For each question it
computes exact first-token yes/no distributions, no sampling:

- `image_variants.mask_attended`: the most attended image tokens hidden. The attention row of
  the query that produces the first answer token (the prompt's last position) is captured,
  averaged over heads and the selected layers; the top `--mask-fraction` of the 576 image
  positions are then removed from the attention mask (their keys become invisible to every
  query; positions keep their RoPE indices). This is the masking of VAUQ-style probes.
- `image_variants.mask_random`: the same number of image positions hidden, drawn uniformly
  (per-question seed): the control that says whether *attended* patches matter.
- `question_variants.<name>`: the question reworded (POPE's "Is there a/an X in the image?",
  also its "imange" typo, only; other questions get none): `contain` = "Does the image contain a/an X?",
  `see` = "Can you see a/an X in the image?". The answer-format suffix is kept.
- `attention_probe`: of that first-answer-token query, `image_share` (attention mass on the
  image positions, mean over heads and the selected layers), `top_share` (share of the image
  attention in the hidden top patches), `map_entropy` (entropy of the image attention map,
  divided by ln 576).

Cost per question: 1 + 2 + (number of rewordings) prefills of the prompt (5 for POPE), no
decoding; the image is encoded once. Resumable; records keep their stage-1 fields.
"""

from __future__ import annotations

import argparse
import math
import os
import re

import torch
from tqdm import tqdm

from llava.constants import IMAGE_TOKEN_INDEX, POPE_ANSWER_SUFFIX
from llava.conversation import build_prompt
from llava.eval.model_vqa_loader import hash_seed, load_model_from_args
from llava.eval.vqa_data import QuestionDataset, batches
from llava.jsonl_io import JsonlAppender
from llava.mm_utils import tokenizer_image_token
from llava.model.generation import StepRunner
from llava.utils import write_manifest
from semantic_entropy.answer_tokens import yes_no_token_ids
from semantic_entropy.attention_capture import (AnswerAttentionCollector, attention_capture,
                                                decoder_attention_modules, prompt_layout)
from semantic_entropy.attention_stats import parse_layer_range
from semantic_entropy.generation_passes import add_pass_args, pending_records, put_in_question_order

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


def yes_no_masses(logits: torch.Tensor, yes_ids, no_ids) -> list[dict]:
    """{"yes_mass", "no_mass"} of each row of (B, V) first-token logits."""
    probs = torch.softmax(logits.float(), dim=-1)  # (B, V)
    yes, no = probs[:, yes_ids].sum(dim=-1).tolist(), probs[:, no_ids].sum(dim=-1).tolist()
    return [{"yes_mass": y, "no_mass": n} for y, n in zip(yes, no)]


# ---------------------------------------------------------------------------------------------
# One batch
# ---------------------------------------------------------------------------------------------


@torch.inference_mode()
def probe_batch(model, questions, input_ids, pixel_values, reworded_ids, layers, mask_fraction: float,
                seed: int, yes_ids, no_ids) -> list[dict]:
    """The probe fields of each question of a batch.

    reworded_ids: per question, {rewording name: prompt ids} (may be empty).
    """
    features = model.encode_images(pixel_values)  # (B, N, hidden)
    embeds, mask, positions = model.embed_multimodal(list(input_ids), features)
    layout = prompt_layout(input_ids, features.shape[1], embeds.shape[1])
    collector = AnswerAttentionCollector(layout, len(decoder_attention_modules(model)), embeds.device)
    with attention_capture(model, collector):
        real = StepRunner(model, embeds, mask, positions)
        collector.end_step()
    attention = collector.image_steps[0][:, list(layers)]  # (B, L', H, N) on the CPU
    image_map = attention.mean(dim=(1, 2))  # (B, N)
    num_patches = image_map.shape[1]
    count = number_of_masked_patches(num_patches, mask_fraction)
    attended = image_map.topk(count, dim=1).indices  # (B, k)
    drawn = torch.stack([random_patches(q["question_id"], seed, num_patches, count) for q in questions])  # (B, k)
    columns = layout.image_columns.to(mask.device)  # (B, N)
    masked = {
        "mask_attended": StepRunner(model, embeds, hide_image_positions(mask, columns, attended), positions).logits,
        "mask_random": StepRunner(model, embeds, hide_image_positions(mask, columns, drawn), positions).logits,
    }
    variants = {name: yes_no_masses(logits, yes_ids, no_ids) for name, logits in masked.items()}
    real_masses = yes_no_masses(real.logits, yes_ids, no_ids)

    reworded: list[dict] = [{} for _ in questions]
    for name in REWORDINGS:
        rows = [i for i, ids in enumerate(reworded_ids) if name in ids]
        if not rows:
            continue
        r_embeds, r_mask, r_positions = model.embed_multimodal([reworded_ids[i][name] for i in rows], features[rows])
        for row, masses in zip(rows, yes_no_masses(StepRunner(model, r_embeds, r_mask, r_positions).logits,
                                                     yes_ids, no_ids)):
            reworded[row][name] = masses

    top_share = image_map.gather(1, attended).sum(dim=1) / image_map.sum(dim=1)  # (B,)
    entropy = normalised_entropy(image_map)  # (B,)
    image_share = attention.sum(dim=-1).mean(dim=(1, 2))  # (B,) mass on the image per head and layer
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


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_pass_args(parser, "the probe fields")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=None, help="image loaders (default 4 on CUDA, 0 on CPU)")
    parser.add_argument("--mask-fraction", type=float, default=0.1, help="share of the image tokens hidden")
    parser.add_argument("--layers", default=None, help="layers a:b whose attention picks the patches (default all)")
    parser.add_argument("--seed", type=int, default=0, help="base seed of the random-mask control")
    args = parser.parse_args(argv)
    records = pending_records(args.generations_file, args.output_file)
    tokenizer, model, image_processor, _ = load_model_from_args(args)
    yes_ids, no_ids = yes_no_token_ids(tokenizer, model.scored_vocab_size)
    layers = parse_layer_range(args.layers, model.config.text_config.num_hidden_layers)
    number_of_masked_patches(576, args.mask_fraction)  # checks the fraction before any work
    write_manifest(args.output_file + ".manifest.json", vars(args), rewordings=REWORDINGS,
                   model_path=os.path.abspath(args.model_path))
    pending = [{"question_id": qid, "image": r["image"], "text": r["prompt"]} for qid, r in records.items()]
    dataset = QuestionDataset(pending, args.image_folder, tokenizer, image_processor, model.config, args.conv_mode)
    workers = args.num_workers if args.num_workers is not None else (4 if model.device.type == "cuda" else 0)
    with JsonlAppender(args.output_file) as out, tqdm(total=len(pending), unit="q", desc="probes") as bar:
        for batch in batches(dataset, args.batch_size, workers):
            reworded_ids = [{name: dataset_ids(dataset, text) for name, text in reworded_questions(q["text"]).items()}
                            for q in batch["questions"]]
            probes = probe_batch(model, batch["questions"], batch["input_ids"], batch["pixel_values"], reworded_ids,
                                 layers, args.mask_fraction, args.seed, yes_ids, no_ids)
            for question, probe in zip(batch["questions"], probes):
                out.write(merge_probe(records[question["question_id"]], probe))
            bar.update(len(probes))
    put_in_question_order(args.output_file, args.generations_file)


def dataset_ids(dataset: QuestionDataset, text: str) -> torch.Tensor:
    """Prompt ids of a question text, built exactly as the dataset builds the original's."""
    return tokenizer_image_token(build_prompt(text, dataset.conv_mode), dataset.tokenizer, IMAGE_TOKEN_INDEX,
                                 return_tensors="pt")


if __name__ == "__main__":
    main()
