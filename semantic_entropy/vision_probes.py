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

Cost per question: 3 prefills of its prompt (capture, two masks), no decoding; the rewordings
share their image's prefix as stage 1 does (one prefill per image, one tree step of the
reworded questions' own tokens), and each image is encoded once per batch. Resumable; records
keep their stage-1 fields.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

from llava.cli import load_model_from_args, new_parser, run_main
from llava.utils import loader_workers
from semantic_entropy.attention.stats import parse_layer_range
from semantic_entropy.probes.vision_probes import (REWORDINGS, merge_probe, number_of_masked_patches, probe_batch,
                                                   reworded_suffixes)
from semantic_entropy.runs.passes import add_batching_args, add_pass_args, open_pass, pass_spec, planned_pass_batches
from semantic_entropy.sampling.answer_tokens import yes_no_token_ids
from semantic_entropy.sampling.prefix_groups import group_batches

TOOL = "semantic_entropy.vision_probes"


def build_parser():
    parser = new_parser(__doc__)
    add_pass_args(parser, "the probe fields")
    add_batching_args(parser, 16, 16, "images (prefixes) per batch")
    parser.add_argument("--mask-fraction", type=float, default=0.1, help="share of the image tokens hidden")
    parser.add_argument("--layers", default=None, help="layers a:b whose attention picks the patches; None = all")
    parser.add_argument("--seed", type=int, default=0, help="base seed of the random-mask control")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    number_of_masked_patches(576, args.mask_fraction)  # checks the fraction before any work
    spec = pass_spec(TOOL, args, {"batch_size": args.batch_size, "images_per_batch": args.images_per_batch},
                     mask_fraction=args.mask_fraction, layers=args.layers, seed=args.seed, rewordings=REWORDINGS)
    with open_pass(args, spec) as (output, records):
        tokenizer, model, image_processor, _ = load_model_from_args(args)
        yes_ids, no_ids = yes_no_token_ids(tokenizer, model.scored_vocab_size)
        output.record_details({"yes_token_ids": yes_ids, "no_token_ids": no_ids})
        layers = parse_layer_range(args.layers, model.config.text_config.num_hidden_layers)
        pending, planned = planned_pass_batches(records, tokenizer, args)
        workers = loader_workers(args.num_workers, model.device)
        loader = group_batches(planned, args.image_folder, image_processor, model.config, workers)
        with output.appender() as out, tqdm(total=len(pending), unit="q", desc="probes") as bar:
            for batch in loader:
                groups = batch["groups"]
                rewordings = [reworded_suffixes(q["text"], g.prefix_ids, tokenizer, args.conv_mode)
                              for g in groups for q in g.questions]
                probes = probe_batch(model, groups, batch["pixel_values"], rewordings, layers, args.mask_fraction,
                                     args.seed, yes_ids, no_ids, tokenizer.eos_token_id)
                for question, probe in zip([q for g in groups for q in g.questions], probes):
                    out.write(merge_probe(records[question["question_id"]], probe))
                bar.update(len(probes))


if __name__ == "__main__":
    sys.exit(run_main(main))
