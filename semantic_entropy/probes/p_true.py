"""p(True) with the image: the prompt, and the first-token probability of "yes" over yes + no."""

from __future__ import annotations

import torch

from llava.constants import POPE_ANSWER_SUFFIX
from semantic_entropy.sampling.sampler import first_token_probs_shared_prefix
from semantic_entropy.scoring.measures import yes_probability

P_TRUE_TEMPLATE = "Question: {question}\nProposed answer: {answer}\nIs the proposed answer true?" + POPE_ANSWER_SUFFIX


def p_true_question(prompt: str, answer: str) -> str:
    """The p(True) question for a stage-1 prompt and its greedy answer.

    >>> p_true_question("Is there a dog in the image?" + POPE_ANSWER_SUFFIX, "No")
    'Question: Is there a dog in the image?\\nProposed answer: No\\nIs the proposed answer true?\\nAnswer the question using a single word or phrase.'
    """
    question = prompt[: -len(POPE_ANSWER_SUFFIX)] if prompt.endswith(POPE_ANSWER_SUFFIX) else prompt
    return P_TRUE_TEMPLATE.format(question=question, answer=answer)


@torch.inference_mode()
def p_true_of_batch(model, groups, pixel_values, yes_ids, no_ids, eos_token_id) -> list[float]:
    features = model.encode_images(pixel_values)
    embeds, mask, positions = model.embed_multimodal([torch.tensor(g.prefix_ids) for g in groups], features)
    suffixes = [(row, ids) for row, g in enumerate(groups) for ids in g.suffix_ids]
    probs = first_token_probs_shared_prefix(model, embeds, mask, positions, suffixes, eos_token_id)  # (Nq, V)
    return [yes_probability(float(row[yes_ids].sum()), float(row[no_ids].sum())) for row in probs]
