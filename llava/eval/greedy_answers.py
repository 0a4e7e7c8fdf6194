"""Greedy (or LLaVA-style sampled) answers to batches of questions, as LLaVA answer records."""

from __future__ import annotations

import torch

from llava.model.generation import decode
from llava.utils import hash_seed, short_uuid


def question_generator(base_seed: int, question_id, device) -> torch.Generator:
    """One generator per question, seeded from the base seed and the id: independent of batching."""
    generator = torch.Generator(device=device)
    generator.manual_seed(hash_seed(base_seed, question_id))
    return generator


def llava_answer_record(question_id, prompt: str, text: str, model_id: str) -> dict:
    """One line of LLaVA's answers file (what eval_pope reads)."""
    return {"question_id": question_id, "prompt": prompt, "text": text, "answer_id": short_uuid(),
            "model_id": model_id, "metadata": {}}


@torch.inference_mode()
def answer_batch(model, tokenizer, batch: dict, max_new_tokens: int, temperature: float = 0.0,
                 top_p: float | None = None, seed: int = 0) -> list[str]:
    """The decoded answers of one batch from `QuestionDataset`; temperature 0 is greedy."""
    features = model.encode_images(batch["pixel_values"])
    embeds, mask, positions = model.embed_multimodal(batch["input_ids"], features)
    generators = None
    if temperature > 0:
        generators = [question_generator(seed, q["question_id"], model.device) for q in batch["questions"]]
    answers = decode(model, embeds, mask, positions, max_new_tokens, tokenizer.eos_token_id,
                     temperature=temperature, top_p=top_p, generators=generators)
    return [tokenizer.decode(answer.token_ids, skip_special_tokens=True).strip() for answer in answers]
