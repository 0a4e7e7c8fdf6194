#!/usr/bin/env bash
# Vision-aware uncertainty study (docs/method.md): stage 1 with the degraded-image passes
# (--image-variants), the probes pass (most-attended image tokens hidden, a random-mask control,
# question rewordings), the p(True) pass, the baseline pass (the published detectors' inputs:
# VAUQ, GLSim, VL-Uncertainty, SVAR, the no-image prior; docs/baselines.md), stage 2 (every
# registered measure, the new ones included), a logistic
# combination cross-validated across images, eval_pope and the AUROC/AUPR/PRR table with bootstrap
# intervals. The table holds the ablations too: each variant
# alone (visual_contrast_<v>, contrastive_yes_no_entropy_<v>), lambda = 0 (= yes_no_entropy) and the
# image term alone (image_independence_<v>).
# Defaults run the embedded ShapesPOPE demo on CPU. Real POPE on a GPU with a real checkpoint:
#     MODEL_PATH=/models/llava-v1.5-7b VISION_TOWER=/models/clip-vit-large-patch14-336 \
#     POPE_DIR=playground/data/eval/pope IMAGE_FOLDER=playground/data/eval/pope/val2014 \
#     ANNOTATION_DIR=playground/data/eval/pope/coco DEVICE=cuda bash scripts/method_study.sh
# Every variable can be set from the environment. A finished stage is skipped; an interrupted one resumes.
set -euo pipefail

# ---- config -------------------------------------------------------------------------------
MODEL_PATH=${MODEL_PATH:-playground/models/llava-v1.5-shapes-tiny}  # original layout or llava-hf folder
VISION_TOWER=${VISION_TOWER:-}            # local CLIP folder; empty = config's mm_vision_tower
POPE_DIR=${POPE_DIR:-playground/data/eval/shapes_pope}
ANNOTATION_DIR=${ANNOTATION_DIR:-$POPE_DIR/coco}        # coco_pope_{adversarial,random,popular}.json
IMAGE_FOLDER=${IMAGE_FOLDER:-$POPE_DIR/images}          # real POPE: $POPE_DIR/val2014
QUESTION_FILE=${QUESTION_FILE:-$POPE_DIR/llava_pope_test.jsonl}
IMAGE_VARIANTS=${IMAGE_VARIANTS:-mean,blur,noise}       # degraded images (one extra prefill each)
CONV_MODE=${CONV_MODE:-vicuna_v1}
NUM_SAMPLES=${NUM_SAMPLES:-10}            # sampled answers per question (semantic entropy and friends)
TEMPERATURE=${TEMPERATURE:-1.0}
SAMPLE_SEED=${SAMPLE_SEED:-0}             # base seed of the samples and of the noise variant
BOOTSTRAP=${BOOTSTRAP:-1000}              # bootstrap resamples of the intervals
DEVICE=${DEVICE:-auto}
DTYPE=${DTYPE:-auto}
BATCH_SIZE=${BATCH_SIZE:-}                # empty = stage 1's default
OUTPUT_DIR=${OUTPUT_DIR:-runs/method_study/$(basename "$MODEL_PATH")}
MASK_FRACTION=${MASK_FRACTION:-0.1}       # share of the image tokens the probes hide
VAUQ_SETTING=${VAUQ_SETTING:-}            # VAUQ's published (ratio, alpha): MMVet, CVBench, VILP; empty = the pass's default
VL_SETTING=${VL_SETTING:-}                # VL-Uncertainty's published (radii, temperature): MMVet, MMMU, ...; empty = default
COMBINED_FEATURES=${COMBINED_FEATURES:-yes_no_entropy,semantic_entropy,visual_contrast_noise,image_independence_mean,image_independence_blur,image_independence_noise,image_independence_mask_attended,image_independence_mask_random,wording_perturbation_yes_no_entropy}
PYTHON=${PYTHON:-python}
# ---------------------------------------------------------------------------------------------

if [ ! -e "$MODEL_PATH" ]; then
    echo "model $MODEL_PATH is absent (the ShapesPOPE demo model is trained by scripts/train_shapes_llava.py)" >&2
    exit 1
fi
RUN_DIR="$OUTPUT_DIR/$(basename "${QUESTION_FILE%.jsonl}")_n${NUM_SAMPLES}_t${TEMPERATURE}_seed${SAMPLE_SEED}_variants_${IMAGE_VARIANTS//,/_}"
ANSWERS_FILE="$RUN_DIR/answers.jsonl"
GENERATIONS_FILE="$RUN_DIR/generations.jsonl"
PROBED_FILE="$RUN_DIR/generations_probes_m${MASK_FRACTION}.jsonl"
PTRUE_FILE="$RUN_DIR/generations_probes_m${MASK_FRACTION}_ptrue.jsonl"
BASELINE_TAG="baselines${VAUQ_SETTING:+_vauq-$VAUQ_SETTING}${VL_SETTING:+_vl-$VL_SETTING}"
SCORED_INPUT_FILE="$RUN_DIR/generations_probes_m${MASK_FRACTION}_ptrue_${BASELINE_TAG}.jsonl"
UNCERTAINTY_FILE="$RUN_DIR/uncertainty_exact_probes_m${MASK_FRACTION}_${BASELINE_TAG}.jsonl"
COMBINED_FILE="$RUN_DIR/uncertainty_exact_probes_m${MASK_FRACTION}_${BASELINE_TAG}_cv.jsonl"
EVAL_DIR="$RUN_DIR/eval_exact"
mkdir -p "$RUN_DIR"

vision_args=()
[ -n "$VISION_TOWER" ] && vision_args=(--vision-tower "$VISION_TOWER")
batch_args=()
[ -n "$BATCH_SIZE" ] && batch_args=(--batch-size "$BATCH_SIZE")
baseline_args=()
[ -n "$VAUQ_SETTING" ] && baseline_args+=(--vauq-setting "$VAUQ_SETTING")
[ -n "$VL_SETTING" ] && baseline_args+=(--vl-setting "$VL_SETTING")
baseline_args+=(--vl-blur-only-ablation)  # our ablation beside the published detectors (docs/baselines.md)
# stage 1 resumes by question_id: rerunning after a crash continues
"$PYTHON" -m semantic_entropy.model_vqa_loader \
    --model-path "$MODEL_PATH" "${vision_args[@]}" \
    --question-file "$QUESTION_FILE" --image-folder "$IMAGE_FOLDER" \
    --answers-file "$ANSWERS_FILE" --generations-file "$GENERATIONS_FILE" \
    --temperature 0 --sampling-temperature "$TEMPERATURE" --num-samples "$NUM_SAMPLES" \
    --seed "$SAMPLE_SEED" --conv-mode "$CONV_MODE" --image-variants "$IMAGE_VARIANTS" \
    --device "$DEVICE" --dtype "$DTYPE" "${batch_args[@]}"

"$PYTHON" -m semantic_entropy.vision_probes \
    --model-path "$MODEL_PATH" "${vision_args[@]}" --image-folder "$IMAGE_FOLDER" \
    --generations-file "$GENERATIONS_FILE" --output-file "$PROBED_FILE" --conv-mode "$CONV_MODE" \
    --mask-fraction "$MASK_FRACTION" --seed "$SAMPLE_SEED" --device "$DEVICE" --dtype "$DTYPE"

"$PYTHON" -m semantic_entropy.p_true \
    --model-path "$MODEL_PATH" "${vision_args[@]}" --image-folder "$IMAGE_FOLDER" \
    --generations-file "$PROBED_FILE" --output-file "$PTRUE_FILE" --conv-mode "$CONV_MODE" \
    --device "$DEVICE" --dtype "$DTYPE"

"$PYTHON" -m semantic_entropy.baseline_probes \
    --model-path "$MODEL_PATH" "${vision_args[@]}" --image-folder "$IMAGE_FOLDER" \
    --generations-file "$PTRUE_FILE" --output-file "$SCORED_INPUT_FILE" --conv-mode "$CONV_MODE" \
    --seed "$SAMPLE_SEED" --device "$DEVICE" --dtype "$DTYPE" "${baseline_args[@]}"

"$PYTHON" -m semantic_entropy.compute_se_myself \
    --generations-file "$SCORED_INPUT_FILE" --output-file "$UNCERTAINTY_FILE" --judge exact

"$PYTHON" -m llava.eval.eval_pope \
    --annotation-dir "$ANNOTATION_DIR" --question-file "$QUESTION_FILE" \
    --result-file "$ANSWERS_FILE" --output-json "$RUN_DIR/pope_metrics.json"

rm -f "$COMBINED_FILE"  # refitted every run: cheap, and it must follow the current scores
"$PYTHON" -m semantic_entropy.fitted_combination \
    --uncertainty-file "$UNCERTAINTY_FILE" --answers-file "$ANSWERS_FILE" \
    --annotation-dir "$ANNOTATION_DIR" --question-file "$QUESTION_FILE" \
    --features "$COMBINED_FEATURES" --output-file "$COMBINED_FILE" --seed "$SAMPLE_SEED"

"$PYTHON" -m semantic_entropy.eval_auroc \
    --uncertainty-file "$COMBINED_FILE" --answers-file "$ANSWERS_FILE" \
    --annotation-dir "$ANNOTATION_DIR" --question-file "$QUESTION_FILE" \
    --output-dir "$EVAL_DIR" --bootstrap "$BOOTSTRAP" \
    --title "Vision-aware uncertainty on $(basename "$POPE_DIR") ($(basename "$MODEL_PATH"))" --print headline

echo "full table (paired differences, every split and metric): $EVAL_DIR/metrics.md"

# ---- results browser: every question with its samples, scores and curves, in one HTML file ---
"$PYTHON" -m semantic_entropy.report --run-dir "$RUN_DIR" --eval-dir "$EVAL_DIR" --output "$RUN_DIR/report.html"
