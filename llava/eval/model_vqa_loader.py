"""Greedy LLaVA-1.5 answers to a question file: the original CLI, batched and resumable.

python -m llava.eval.model_vqa_loader --model-path M --question-file Q --image-folder I \
    --answers-file A --temperature 0 --conv-mode vicuna_v1 [--batch-size 8 --device cuda --dtype float16]

Writes LLaVA's answer records (question_id, prompt, text, answer_id, model_id, metadata), one
line each, in question order. Rerunning with the same answers file skips the question_ids
already answered. Deviation from the original: no conv-mode rewriting keyed on the model's
folder name ('plain' models need `--conv-mode plain` explicitly).
"""

from __future__ import annotations

import argparse
import os

import torch
from tqdm import tqdm

from llava.eval.vqa_data import QuestionDataset, batches, get_chunk, load_questions
from llava.jsonl_io import JsonlAppender, completed_ids
from llava.mm_utils import get_model_name_from_path
from llava.model.builder import load_pretrained_model
from llava.model.generation import decode
from llava.utils import short_uuid, write_manifest


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Flags shared by every script that loads a model."""
    parser.add_argument("--model-path", type=str, required=True)
    parser.add_argument("--model-base", type=str, default=None)
    parser.add_argument("--vision-tower", type=str, default=None, help="local CLIP folder (overrides mm_vision_tower)")
    parser.add_argument("--device", type=str, default="auto", help="cuda, cuda:N, cpu; auto = cuda if available")
    parser.add_argument("--dtype", type=str, default="auto", help="float16, bfloat16, float32; auto = fp16 on CUDA, fp32 on CPU")
    parser.add_argument("--vision-dtype", type=str, default="float32",
                        help="CLIP's dtype (default: %(default)s, as under LLaVA's evaluation scripts); "
                        "float16, bfloat16, or auto = --dtype")
    parser.add_argument("--attn-implementation", type=str, default=None, help="sdpa (default), eager, flash_attention_2")


def add_question_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-folder", type=str, required=True)
    parser.add_argument("--question-file", type=str, required=True)
    parser.add_argument("--answers-file", type=str, required=True)
    parser.add_argument("--conv-mode", type=str, default="llava_v1")
    parser.add_argument("--num-chunks", type=int, default=1)
    parser.add_argument("--chunk-idx", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--num-workers", type=int, default=None, help="image-loading processes (default 4 on CUDA, 0 on CPU)")
    parser.add_argument("--max_new_tokens", type=int, default=128)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    add_question_args(parser)
    parser.add_argument("--temperature", type=float, default=0.2, help="0 = greedy (what POPE uses)")
    parser.add_argument("--top_p", type=float, default=None)
    parser.add_argument("--num_beams", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="base seed of sampling when --temperature > 0")
    return parser


def load_model_from_args(args):
    return load_pretrained_model(
        args.model_path,
        args.model_base,
        device=args.device,
        dtype=args.dtype,
        vision_tower=args.vision_tower,
        vision_dtype=args.vision_dtype,
        attn_implementation=args.attn_implementation,
    )


def pending_questions(args) -> tuple[list[dict], int]:
    """This chunk's questions not yet in the answers file, and how many were already done."""
    questions = get_chunk(load_questions(os.path.expanduser(args.question_file)), args.num_chunks, args.chunk_idx)
    done = completed_ids(os.path.expanduser(args.answers_file))
    return [q for q in questions if q["question_id"] not in done], len(questions) - sum(
        q["question_id"] not in done for q in questions
    )


def question_generator(base_seed: int, question_id, device) -> torch.Generator:
    """One generator per question, seeded from the base seed and the id: independent of batching."""
    generator = torch.Generator(device=device)
    generator.manual_seed(hash_seed(base_seed, question_id))
    return generator


def hash_seed(base_seed: int, question_id) -> int:
    """A stable 63-bit seed for (base seed, question_id) (Python's hash() is salted per process).

    >>> hash_seed(0, 1) == hash_seed(0, 1) != hash_seed(1, 1)
    True
    """
    import hashlib

    digest = hashlib.sha256(f"{base_seed}:{question_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@torch.inference_mode()
def answer_questions(args, tokenizer, model, image_processor) -> int:
    """Answer the pending questions, appending each batch's records; returns how many were written."""
    if args.num_beams != 1:
        raise NotImplementedError("beam search is not supported; POPE uses greedy decoding (--temperature 0)")
    questions, already = pending_questions(args)
    if already:
        print(f"resuming: {already} questions already answered in {args.answers_file}")
    dataset = QuestionDataset(questions, args.image_folder, tokenizer, image_processor, model.config, args.conv_mode)
    num_workers = args.num_workers if args.num_workers is not None else (4 if model.device.type == "cuda" else 0)
    model_id = get_model_name_from_path(args.model_path)
    written = 0
    with JsonlAppender(os.path.expanduser(args.answers_file)) as out, tqdm(total=len(questions), unit="q") as bar:
        for batch in batches(dataset, args.batch_size, num_workers):
            features = model.encode_images(batch["pixel_values"])
            embeds, mask, positions = model.embed_multimodal(batch["input_ids"], features)
            generators = None
            if args.temperature > 0:
                generators = [question_generator(args.seed, q["question_id"], model.device) for q in batch["questions"]]
            answers = decode(model, embeds, mask, positions, args.max_new_tokens, tokenizer.eos_token_id,
                             temperature=args.temperature, top_p=args.top_p, generators=generators)
            for question, answer in zip(batch["questions"], answers):
                text = tokenizer.decode(answer.token_ids, skip_special_tokens=True).strip()
                out.write({
                    "question_id": question["question_id"],
                    "prompt": question["text"],
                    "text": text,
                    "answer_id": short_uuid(),
                    "model_id": model_id,
                    "metadata": {},
                })
                written += 1
            bar.update(len(batch["questions"]))
    return written


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    tokenizer, model, image_processor, _ = load_model_from_args(args)
    write_manifest(os.path.expanduser(args.answers_file) + ".manifest.json", vars(args),
                   model_path=os.path.abspath(args.model_path))
    answer_questions(args, tokenizer, model, image_processor)


if __name__ == "__main__":
    main()
