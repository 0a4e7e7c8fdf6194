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

import sys

from tqdm import tqdm

from llava.cli import load_model_from_args, new_parser, run_main
from semantic_entropy.probes.p_true import P_TRUE_TEMPLATE, p_true_of_batch, p_true_question
from semantic_entropy.runs.passes import add_batching_args, add_pass_args, open_pass, pass_spec
from semantic_entropy.sampling.answer_tokens import yes_no_token_ids
from semantic_entropy.sampling.prefix_groups import group_batches, group_questions, plan_batches

TOOL = "semantic_entropy.p_true"


def build_parser():
    parser = new_parser(__doc__)
    add_pass_args(parser, "p_true")
    add_batching_args(parser, 128, 16, "images (prefixes) per batch", workers=False)
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    spec = pass_spec(TOOL, args, {"batch_size": args.batch_size, "images_per_batch": args.images_per_batch},
                     template=P_TRUE_TEMPLATE)
    with open_pass(args, spec) as (output, records):
        tokenizer, model, image_processor, _ = load_model_from_args(args)
        yes_ids, no_ids = yes_no_token_ids(tokenizer, model.scored_vocab_size)
        output.record_details({"yes_token_ids": yes_ids, "no_token_ids": no_ids})
        # The p(True) prompts as pseudo-questions: same image, the new text.
        asks = [{"question_id": qid, "image": r["image"], "text": p_true_question(r["prompt"], r["greedy"]["text"])}
                for qid, r in records.items()]
        planned = plan_batches(group_questions(asks, tokenizer, args.conv_mode), args.batch_size,
                               args.images_per_batch)
        with output.appender() as out, tqdm(total=len(asks), unit="q", desc="p(True)") as bar:
            for batch in group_batches(planned, args.image_folder, image_processor, model.config, 0):
                values = p_true_of_batch(model, batch["groups"], batch["pixel_values"], yes_ids, no_ids,
                                         tokenizer.eos_token_id)
                for question, value in zip([q for g in batch["groups"] for q in g.questions], values):
                    out.write({**records[question["question_id"]], "p_true": value})
                bar.update(len(values))


if __name__ == "__main__":
    sys.exit(run_main(main))
