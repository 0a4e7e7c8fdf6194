"""Greedy LLaVA-1.5 answers to a question file: the original CLI, batched and resumable.

python -m llava.eval.model_vqa_loader --model-path M --question-file Q --image-folder I \
    --answers-file A --temperature 0 --conv-mode vicuna_v1 [--batch-size 8 --device cuda --dtype float16]

Writes LLaVA's answer records (question_id, prompt, text, answer_id, model_id, metadata), one
line each, in question order, and A.manifest.json. Rerunning with the same answers file skips
the question_ids already answered; a rerun with other settings is refused. Deviation from the
original: no conv-mode rewriting keyed on the model's folder name ('plain' models need
`--conv-mode plain` explicitly).
"""

from __future__ import annotations

import os
import sys

from tqdm import tqdm

from llava.cli import add_model_args, add_question_args, load_model_from_args, model_settings, new_parser, run_main
from llava.eval.greedy_answers import answer_batch, llava_answer_record
from llava.eval.vqa_data import QuestionDataset, batches, questions_of_chunk
from llava.mm_utils import get_model_name_from_path
from semantic_entropy.runs.record_output import RecordOutput, RunSpec, finish_outputs, open_outputs

TOOL = "llava.eval.model_vqa_loader"


def build_parser():
    parser = new_parser(__doc__)
    add_model_args(parser)
    add_question_args(parser, batch_unit="questions per batch")
    parser.add_argument("--temperature", type=float, default=0.2, help="0 = greedy (what POPE uses)")
    parser.add_argument("--top-p", "--top_p", dest="top_p", type=float, default=None,
                        help="nucleus filtering when --temperature > 0")
    parser.add_argument("--num-beams", "--num_beams", dest="num_beams", type=int, default=1,
                        help="only 1 (beam search is not supported)")
    parser.add_argument("--seed", type=int, default=0, help="base seed of sampling when --temperature > 0")
    return parser


def run_spec(args) -> RunSpec:
    sampled = args.temperature > 0
    return RunSpec(
        tool=TOOL,
        settings={**model_settings(args), "image_folder": os.path.abspath(args.image_folder),
                  "conv_mode": args.conv_mode, "num_chunks": args.num_chunks, "chunk_idx": args.chunk_idx,
                  "max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
                  "top_p": args.top_p if sampled else None, "seed": args.seed if sampled else None},
        inputs={"question_file": args.question_file},
        execution={"device": args.device, "batch_size": args.batch_size},
    )


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    if args.num_beams != 1:
        raise NotImplementedError("beam search is not supported; POPE uses greedy decoding (--temperature 0)")
    questions = questions_of_chunk(args.question_file, args.num_chunks, args.chunk_idx)
    output = RecordOutput(args.answers_file, run_spec(args))
    with open_outputs([output]):
        pending = [q for q in questions if q["question_id"] not in output.done]
        if output.done:
            print(f"resuming: {len(questions) - len(pending)} of {len(questions)} questions already answered")
        tokenizer, model, image_processor, _ = load_model_from_args(args)
        dataset = QuestionDataset(pending, args.image_folder, tokenizer, image_processor, model.config,
                                  args.conv_mode)
        num_workers = args.num_workers if args.num_workers is not None else (4 if model.device.type == "cuda" else 0)
        model_id = get_model_name_from_path(args.model_path)
        with output.appender() as out, tqdm(total=len(pending), unit="q") as bar:
            for batch in batches(dataset, args.batch_size, num_workers):
                texts = answer_batch(model, tokenizer, batch, args.max_new_tokens, args.temperature, args.top_p,
                                     args.seed)
                for question, text in zip(batch["questions"], texts):
                    out.write(llava_answer_record(question["question_id"], question["text"], text, model_id))
                bar.update(len(batch["questions"]))
        order = {q["question_id"]: rank for rank, q in enumerate(questions)}
        [count] = finish_outputs([output], output.info, order)
    print(f"wrote {output.path} ({count} answers)")


if __name__ == "__main__":
    sys.exit(run_main(main))
