"""p(True) with the image: LLaVA asked whether its own greedy answer is true.

python -m semantic_entropy.p_true --model-path M --image-folder I --generations-file G --output-file G2

Reads stage 1's generations, asks the model (image included, same conv template)

    Question: {question}
    Proposed answer: {greedy answer}
    Is the proposed answer true? Answer the question using a single word or phrase.

and writes each record again with `p_true` = P(yes) / (P(yes) + P(no)) of the first answer
token (yes/no variants from the vocabulary). Stage 2 then scores `p_true` (as 1 - p_true).
Each image's prompt prefix is computed once for all its questions, as in stage 1. Resumable.
"""

from __future__ import annotations

import argparse

import torch
from tqdm import tqdm

from llava.constants import POPE_ANSWER_SUFFIX
from llava.eval.model_vqa_loader import load_model_from_args
from llava.jsonl_io import JsonlAppender
from llava.utils import write_manifest
from semantic_entropy.sampling.answer_tokens import yes_no_token_ids
from semantic_entropy.runs.passes import add_pass_args, pending_records, put_in_question_order
from semantic_entropy.sampling.prefix_groups import group_batches, group_questions, plan_batches
from semantic_entropy.sampling.sampler import first_token_probs_shared_prefix

P_TRUE_TEMPLATE = "Question: {question}\nProposed answer: {answer}\nIs the proposed answer true?" + POPE_ANSWER_SUFFIX


def p_true_question(prompt: str, answer: str) -> str:
    """The p(True) question for a stage-1 prompt and its greedy answer.

    >>> p_true_question("Is there a dog in the image?" + POPE_ANSWER_SUFFIX, "No")
    'Question: Is there a dog in the image?\\nProposed answer: No\\nIs the proposed answer true?\\nAnswer the question using a single word or phrase.'
    """
    question = prompt[: -len(POPE_ANSWER_SUFFIX)] if prompt.endswith(POPE_ANSWER_SUFFIX) else prompt
    return P_TRUE_TEMPLATE.format(question=question, answer=answer)


def true_probability(yes_mass: float, no_mass: float) -> float:
    """P(yes) renormalised over yes and no; 0.5 when the model puts no mass on either.

    >>> true_probability(0.375, 0.125)
    0.75
    >>> true_probability(0.0, 0.0)
    0.5
    """
    total = yes_mass + no_mass
    return yes_mass / total if total > 0 else 0.5


@torch.inference_mode()
def p_true_of_batch(model, groups, pixel_values, yes_ids, no_ids, eos_token_id) -> list[float]:
    features = model.encode_images(pixel_values)
    embeds, mask, positions = model.embed_multimodal([torch.tensor(g.prefix_ids) for g in groups], features)
    suffixes = [(row, ids) for row, g in enumerate(groups) for ids in g.suffix_ids]
    probs = first_token_probs_shared_prefix(model, embeds, mask, positions, suffixes, eos_token_id)  # (Nq, V)
    return [true_probability(float(row[yes_ids].sum()), float(row[no_ids].sum())) for row in probs]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_pass_args(parser, "p_true")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--images-per-batch", type=int, default=16)
    args = parser.parse_args(argv)

    tokenizer, model, image_processor, _ = load_model_from_args(args)
    yes_ids, no_ids = yes_no_token_ids(tokenizer, model.scored_vocab_size)
    records = pending_records(args.generations_file, args.output_file)
    write_manifest(args.output_file + ".manifest.json", vars(args), template=P_TRUE_TEMPLATE)
    # The p(True) prompts as pseudo-questions: same image, the new text.
    asks = [{"question_id": qid, "image": r["image"], "text": p_true_question(r["prompt"], r["greedy"]["text"])}
            for qid, r in records.items()]
    planned = plan_batches(group_questions(asks, tokenizer, args.conv_mode), args.batch_size, args.images_per_batch)
    with JsonlAppender(args.output_file) as out, tqdm(total=len(asks), unit="q", desc="p(True)") as bar:
        for batch in group_batches(planned, args.image_folder, image_processor, model.config, 0):
            values = p_true_of_batch(model, batch["groups"], batch["pixel_values"], yes_ids, no_ids,
                                     tokenizer.eos_token_id)
            for question, value in zip([q for g in batch["groups"] for q in g.questions], values):
                out.write({**records[question["question_id"]], "p_true": value})
            bar.update(len(values))
    put_in_question_order(args.output_file, args.generations_file)


if __name__ == "__main__":
    main()
