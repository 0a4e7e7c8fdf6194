"""The method-v2 scores' inputs (docs/method.md, "Method v2"), added to stage 1's generations.

python -m semantic_entropy.method_probes --model-path M --image-folder I --generations-file G \
    --output-file G2 [--grounding-layers 1,2] [--erase-fractions 0.05,0.1,0.2] [--crop-scale 0.5 --crop-grid 3]

A later pass (like `semantic_entropy.baseline_probes`). Each POPE question's record gets a
`method_probes` field (null for other questions):

- `grounding`: at each grounding layer, the largest logit-lens log-probabilities of the asked
  object's tokens over the image tokens (`logit_lens_top`) and the largest cosine similarities
  of the object's token states with the image tokens (`similarity_top`), high to low
  (`semantic_entropy.probes.grounding`); the measure `grounding_disagreement` reads one of them through a calibration fitted on
  a validation world (`semantic_entropy/scoring/method_v2_settings.json`);
- `erased`: the first-token yes/no mass with the image tokens the object's last token attends
  to most left out, one entry per erased share of the image;
- `crops`: the first-token yes/no mass on each crop of the image;
- `real_first_token`: the yes/no mass with the whole image (equal to stage 1's first_token).

Cost per batch of G images and Q questions: five language-model calls (the real-image prefill
and tree step, one row per question and erased share, the crops' prefill and tree step) and two
vision calls (see `semantic_entropy.probes.method_probes`). Resumable; records keep their
earlier fields.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

from llava.cli import load_model_from_args, new_parser, positive_int, run_main
from llava.utils import loader_workers
from semantic_entropy.baseline_probes import radii as comma_floats
from semantic_entropy.probes.method_inputs import CroppedGroupBatchDataset, method_question
from semantic_entropy.probes.method_probes import MethodSettings, crop_grid, erased_count, method_batch
from semantic_entropy.probes.published_layers import parse_range
from semantic_entropy.probes.vauq import VAUQ_LAYERS
from semantic_entropy.runs.passes import add_batching_args, add_pass_args, open_pass, pass_spec, planned_pass_batches
from semantic_entropy.sampling.answer_tokens import yes_no_token_ids
from semantic_entropy.sampling.prefix_groups import planned_batch_loader

TOOL = "semantic_entropy.method_probes"
DEFAULT_ERASE_FRACTIONS = (0.05, 0.1, 0.2)
DEFAULT_CROP_SCALE = 0.5
DEFAULT_CROP_GRID = 3
DEFAULT_TOP_K = 16
MAX_EVERY_LAYER = 8  # models up to this depth keep every layer's grounding by default


def default_grounding_layers(num_layers: int) -> tuple[int, ...]:
    """Every layer (hidden-state indices 1..L) up to MAX_EVERY_LAYER layers; else the layers at
    1/4, 3/8, 1/2, 5/8, 3/4 and 1 of the depth.

    >>> default_grounding_layers(2), default_grounding_layers(32)
    ((1, 2), (8, 12, 16, 20, 24, 32))
    """
    if num_layers <= MAX_EVERY_LAYER:
        return tuple(range(1, num_layers + 1))
    return tuple(sorted({max(1, round(num_layers * share / 8)) for share in (2, 3, 4, 5, 6, 8)}))


def layer_list(text: str | None, num_layers: int) -> tuple[int, ...]:
    """A flag's comma list of hidden-state indices (1..L), or the default.

    >>> layer_list("2,1,2", 4), layer_list(None, 2)
    ((1, 2), (1, 2))
    >>> layer_list("5", 4)
    Traceback (most recent call last):
    ...
    ValueError: --grounding-layers must be hidden-state indices 1..4, got '5'
    """
    if text is None:
        return default_grounding_layers(num_layers)
    try:
        layers = tuple(sorted({int(part) for part in text.split(",")}))
    except ValueError:
        layers = (0,)
    if not layers or min(layers) < 1 or max(layers) > num_layers:
        raise ValueError(f"--grounding-layers must be hidden-state indices 1..{num_layers}, got {text!r}")
    return layers


def build_parser():
    parser = new_parser(__doc__)
    add_pass_args(parser, "the method_probes field")
    add_batching_args(parser, 64, 8, "images per batch (each is prefilled 1 + crops times)")
    parser.add_argument("--grounding-layers", default=None,
                        help="hidden-state indices (1..L, comma list) read for the grounding; None = every layer "
                             f"up to {MAX_EVERY_LAYER} layers, else six from 1/4 of the depth to the last")
    parser.add_argument("--top-k", type=positive_int, default=DEFAULT_TOP_K,
                        help="largest grounding values kept per layer")
    parser.add_argument("--attention-layers", default=None,
                        help="decoder layers a:b whose object-token attention ranks the erased region; "
                             "None = VAUQ's 10:25 of 32, scaled")
    parser.add_argument("--erase-fractions", type=comma_floats, default=DEFAULT_ERASE_FRACTIONS,
                        help="shares of the image tokens erased (comma list, each in (0, 1))")
    parser.add_argument("--crop-scale", type=float, default=DEFAULT_CROP_SCALE,
                        help="side of each crop as a share of the image's width and height")
    parser.add_argument("--crop-grid", type=positive_int, default=DEFAULT_CROP_GRID,
                        help="crops per row and column (grid x grid crops, evenly spread)")
    return parser


def settings_from_args(args, num_layers: int) -> MethodSettings:
    for fraction in args.erase_fractions:
        erased_count(fraction, 576)  # checks the share
    return MethodSettings(
        grounding_layers=layer_list(args.grounding_layers, num_layers),
        top_k=args.top_k,
        attention_layers=parse_range(args.attention_layers, VAUQ_LAYERS, num_layers),
        erase_fractions=tuple(args.erase_fractions),
        crop_boxes=crop_grid(args.crop_scale, args.crop_grid),
    )


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    crop_grid(args.crop_scale, args.crop_grid)  # checks the flags before any work
    for fraction in args.erase_fractions:
        erased_count(fraction, 576)
    spec = pass_spec(TOOL, args, {"batch_size": args.batch_size, "images_per_batch": args.images_per_batch},
                     grounding_layers=args.grounding_layers, top_k=args.top_k, attention_layers=args.attention_layers,
                     erase_fractions=list(args.erase_fractions), crop_scale=args.crop_scale, crop_grid=args.crop_grid)
    with open_pass(args, spec) as (output, records):
        tokenizer, model, image_processor, _ = load_model_from_args(args)
        settings = settings_from_args(args, model.config.text_config.num_hidden_layers)
        yes_ids, no_ids = yes_no_token_ids(tokenizer, model.scored_vocab_size)
        output.record_details({"yes_token_ids": yes_ids, "no_token_ids": no_ids,
                               "grounding_layers": list(settings.grounding_layers),
                               "attention_layers": list(settings.attention_layers)})
        pending, planned = planned_pass_batches(records, tokenizer, args)
        dataset = CroppedGroupBatchDataset(planned, args.image_folder, image_processor, model.config,
                                           settings.crop_boxes)
        loader = planned_batch_loader(dataset, loader_workers(args.num_workers, model.device))
        with output.appender() as out, tqdm(total=len(pending), unit="q", desc="method probes") as bar:
            for batch in loader:
                groups = batch["groups"]
                inputs = [method_question(records[q["question_id"]], suffix, tokenizer, args.conv_mode)
                          for g in groups for q, suffix in zip(g.questions, g.suffix_ids)]
                fields = method_batch(model, groups, batch["pixel_values"], batch["crop_pixel_values"], inputs,
                                      settings, yes_ids, no_ids, tokenizer.eos_token_id)
                for question, field in zip([q for g in groups for q in g.questions], fields):
                    out.write({**records[question["question_id"]], "method_probes": field})
                bar.update(len(fields))


if __name__ == "__main__":
    sys.exit(run_main(main))
