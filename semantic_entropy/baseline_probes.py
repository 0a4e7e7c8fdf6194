"""The published vision-aware hallucination detectors' inputs, added to stage 1's generations.

python -m semantic_entropy.baseline_probes --model-path M --image-folder I --generations-file G \
    --output-file G2 [--vauq-setting MMVet] [--vl-setting MMVet] [--seed 0]

A later pass (like `semantic_entropy.vision_probes`). Each record gets a `baseline_probes`
field; stage 2 scores it with the measures named vauq*, glsim*, attention_ratio*,
vl_uncertainty* and no_image* (docs/baselines.md gives each one's source, formula and
settings):

- `vauq`: the entropies (bits) of the greedy answer's steps, teacher-forced, with the image,
  with the most attended image tokens hidden, and without the image (VAUQ, arXiv 2602.21054).
- `attention_ratio`: per layer, the head-mean attention mass on the image of the first answer
  token's query (SVAR, "Devils in Middle Layers", arXiv 2411.16724).
- `glsim`: global and local similarity of the asked object with the image (arXiv 2508.19972).
- `no_image`: the first-token yes/no mass with the image removed (arXiv 2403.05262's prior).
- `vl_uncertainty`: the yes/no/other mass at the sampling temperature for each blurred-image x
  rephrased-question pair, and one drawn answer per pair (arXiv 2411.11919).

Cost per batch of G images and Q questions: seven language-model calls (two prefix-shared
prefills with their tree steps: the real image with the answers, and the R blurred images
with the rephrasings; the text before the image once, then one row per question with its most
attended image tokens left out; one text-only row per distinct question text) and two vision
calls (see `semantic_entropy.probes.baselines`).
Resumable; records keep their earlier fields.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

from llava.cli import load_model_from_args, new_parser, positive_int, run_main
from llava.utils import loader_workers
from semantic_entropy.probes import attention_ratio, glsim, vauq, vl_uncertainty
from semantic_entropy.probes.baseline_inputs import BlurredGroupBatchDataset, question_inputs
from semantic_entropy.probes.baselines import BaselineSettings, baseline_batch
from semantic_entropy.probes.published_layers import parse_range
from semantic_entropy.runs.passes import add_batching_args, add_pass_args, open_pass, pass_spec, planned_pass_batches
from semantic_entropy.sampling.answer_tokens import yes_no_token_ids
from semantic_entropy.sampling.prefix_groups import planned_batch_loader

TOOL = "semantic_entropy.baseline_probes"
# Chosen on a ShapesPOPE validation world among the published LLaVA-1.5-7B settings (docs/baselines.md).
DEFAULT_VAUQ_SETTING = "MMVet"
DEFAULT_VL_SETTING = "MMVet"


def radii(text: str) -> tuple[float, ...]:
    """argparse type: comma-separated blur radii (pixels).

    >>> radii("0.5,1")
    (0.5, 1.0)
    """
    values = tuple(float(part) for part in text.split(","))
    if min(values) < 0:
        raise ValueError(f"blur radii must be non-negative, got {text!r}")
    return values


def build_parser():
    parser = new_parser(__doc__)
    add_pass_args(parser, "the baseline_probes field")
    add_batching_args(parser, 64, 8, "images per batch (each is prefilled 1 + blur-radii times)")
    parser.add_argument("--vauq-setting", choices=sorted(vauq.PUBLISHED_SETTINGS), default=DEFAULT_VAUQ_SETTING,
                        help="the authors' LLaVA-1.5-7B (mask ratio, alpha) of this benchmark: "
                             + ", ".join(f"{k} {v}" for k, v in vauq.PUBLISHED_SETTINGS.items()))
    parser.add_argument("--vauq-mask-ratio", type=float, default=None,
                        help="share of the image tokens VAUQ hides; None = the setting's")
    parser.add_argument("--vauq-alpha", type=float, default=None, help="VAUQ's alpha; None = the setting's")
    parser.add_argument("--vauq-layers", default=None,
                        help="layers a:b whose attention ranks the image tokens; None = 10:25 of 32, scaled")
    parser.add_argument("--svar-layers", default=None,
                        help="layers a:b summed by SVAR; None = 5:19 of 32 (layers 5..18), scaled")
    parser.add_argument("--glsim-top-k", type=positive_int, default=glsim.GLSIM_TOP_K,
                        help="image positions GLSim's local similarity averages over")
    parser.add_argument("--vl-setting", choices=sorted(vl_uncertainty.PUBLISHED_SETTINGS), default=DEFAULT_VL_SETTING,
                        help="the authors' LLaVA-1.5-7B (blur radii, sampling temperature) of this benchmark: "
                             + ", ".join(f"{k} {v}" for k, v in vl_uncertainty.PUBLISHED_SETTINGS.items()))
    parser.add_argument("--vl-blur-radii", type=radii, default=None,
                        help="VL-Uncertainty's Gaussian blur radii (pixels, comma-separated); None = the setting's")
    parser.add_argument("--vl-temperature", type=float, default=None,
                        help="VL-Uncertainty's sampling temperature; None = the setting's")
    parser.add_argument("--seed", type=int, default=0, help="base seed of VL-Uncertainty's draws (per question)")
    parser.add_argument("--vl-blur-only-ablation", action="store_true",
                        help="also ask each question in its own wording on the blurred images (our ablation, "
                             "not a published detector; measure vl_uncertainty_blur_only_expected)")
    return parser


def settings_from_args(args, num_layers: int) -> BaselineSettings:
    ratio, alpha = vauq.PUBLISHED_SETTINGS[args.vauq_setting]
    blur_radii, temperature = vl_uncertainty.PUBLISHED_SETTINGS[args.vl_setting]
    settings = BaselineSettings(
        vauq_mask_ratio=args.vauq_mask_ratio if args.vauq_mask_ratio is not None else ratio,
        vauq_alpha=args.vauq_alpha if args.vauq_alpha is not None else alpha,
        vauq_layers=parse_range(args.vauq_layers, vauq.VAUQ_LAYERS, num_layers),
        svar_layers=parse_range(args.svar_layers, attention_ratio.SVAR_LAYERS, num_layers),
        glsim_top_k=args.glsim_top_k,
        blur_radii=tuple(args.vl_blur_radii) if args.vl_blur_radii is not None else blur_radii,
        vl_temperature=args.vl_temperature if args.vl_temperature is not None else temperature,
        seed=args.seed,
        vl_blur_only_ablation=args.vl_blur_only_ablation,
    )
    vauq.hidden_patch_count(settings.vauq_mask_ratio, 576)  # checks the ratio
    if settings.vl_temperature <= 0:
        raise ValueError(f"--vl-temperature must be > 0, got {settings.vl_temperature}")
    return settings


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    settings_from_args(args, 32)  # checks the flags before any work
    spec = pass_spec(TOOL, args, {"batch_size": args.batch_size, "images_per_batch": args.images_per_batch},
                     vauq_setting=args.vauq_setting, vauq_mask_ratio=args.vauq_mask_ratio, vauq_alpha=args.vauq_alpha,
                     vauq_layers=args.vauq_layers, svar_layers=args.svar_layers, glsim_top_k=args.glsim_top_k,
                     vl_setting=args.vl_setting, vl_blur_radii=args.vl_blur_radii and list(args.vl_blur_radii), vl_temperature=args.vl_temperature,
                     seed=args.seed, vl_blur_only_ablation=args.vl_blur_only_ablation,
                     vl_rephrasings=list(vl_uncertainty.REPHRASINGS))
    with open_pass(args, spec) as (output, records):
        tokenizer, model, image_processor, _ = load_model_from_args(args)
        settings = settings_from_args(args, model.config.text_config.num_hidden_layers)
        yes_ids, no_ids = yes_no_token_ids(tokenizer, model.scored_vocab_size)
        output.record_details({"yes_token_ids": yes_ids, "no_token_ids": no_ids,
                               "vauq_layers": list(settings.vauq_layers), "svar_layers": list(settings.svar_layers)})
        pending, planned = planned_pass_batches(records, tokenizer, args)
        dataset = BlurredGroupBatchDataset(planned, args.image_folder, image_processor, model.config,
                                           settings.blur_radii)
        loader = planned_batch_loader(dataset, loader_workers(args.num_workers, model.device))
        with output.appender() as out, tqdm(total=len(pending), unit="q", desc="baselines") as bar:
            for batch in loader:
                groups = batch["groups"]
                inputs = [question_inputs(records[q["question_id"]], g.prefix_ids, suffix, tokenizer, args.conv_mode)
                          for g in groups for q, suffix in zip(g.questions, g.suffix_ids)]
                fields = baseline_batch(model, groups, batch["pixel_values"], batch["blurred_pixel_values"], inputs,
                                        settings, yes_ids, no_ids, tokenizer.eos_token_id)
                for question, field in zip([q for g in groups for q in g.questions], fields):
                    out.write({**records[question["question_id"]], "baseline_probes": field})
                bar.update(len(fields))


if __name__ == "__main__":
    sys.exit(run_main(main))
