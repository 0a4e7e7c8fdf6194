#!/usr/bin/env bash
# POPE with LLaVA-1.5: greedy answers, then eval_pope. Defaults run the embedded ShapesPOPE demo
# on the CPU; point the variables at your checkpoint and POPE folder for the real benchmark.
# Every variable can also be set from the environment: MODEL_PATH=... bash scripts/pope.sh
set -euo pipefail

# ---- config -------------------------------------------------------------------------------
MODEL_PATH=${MODEL_PATH:-playground/models/llava-v1.5-shapes-tiny}  # original layout or llava-hf folder
VISION_TOWER=${VISION_TOWER:-}            # local clip-vit-large-patch14-336 folder; empty = config's mm_vision_tower
POPE_DIR=${POPE_DIR:-playground/data/eval/shapes_pope}  # real POPE: playground/data/eval/pope
ANNOTATION_DIR=${ANNOTATION_DIR:-$POPE_DIR/coco}        # coco_pope_{adversarial,random,popular}.json
IMAGE_FOLDER=${IMAGE_FOLDER:-$POPE_DIR/images}          # real POPE: $POPE_DIR/val2014
QUESTION_FILE=${QUESTION_FILE:-$POPE_DIR/llava_pope_test.jsonl}
PER_CATEGORY=${PER_CATEGORY:-}            # e.g. 200: a reproducible subset per split; empty = all
SEED=${SEED:-0}                           # subset seed
CONV_MODE=${CONV_MODE:-vicuna_v1}
DEVICE=${DEVICE:-auto}                    # cuda, cuda:1, cpu; auto = cuda if available
DTYPE=${DTYPE:-auto}                      # float16 (original), bfloat16, float32; auto = fp16 on CUDA
BATCH_SIZE=${BATCH_SIZE:-8}
OUTPUT_DIR=${OUTPUT_DIR:-runs/pope/$(basename "$MODEL_PATH")}
# ---------------------------------------------------------------------------------------------

mkdir -p "$OUTPUT_DIR"
if [ -n "$PER_CATEGORY" ]; then
    SUBSET_FILE="$OUTPUT_DIR/questions_${PER_CATEGORY}_seed${SEED}.jsonl"
    python -m llava.eval.prepare_pope --pope-dir "$ANNOTATION_DIR" --output-file "$SUBSET_FILE" \
        --per-category "$PER_CATEGORY" --seed "$SEED"
    QUESTION_FILE=$SUBSET_FILE
fi

vision_args=()
[ -n "$VISION_TOWER" ] && vision_args=(--vision-tower "$VISION_TOWER")

python -m llava.eval.model_vqa_loader \
    --model-path "$MODEL_PATH" "${vision_args[@]}" \
    --question-file "$QUESTION_FILE" \
    --image-folder "$IMAGE_FOLDER" \
    --answers-file "$OUTPUT_DIR/answers.jsonl" \
    --temperature 0 \
    --conv-mode "$CONV_MODE" \
    --device "$DEVICE" --dtype "$DTYPE" --batch-size "$BATCH_SIZE"

python -m llava.eval.eval_pope \
    --annotation-dir "$ANNOTATION_DIR" \
    --question-file "$QUESTION_FILE" \
    --result-file "$OUTPUT_DIR/answers.jsonl" \
    --output-json "$OUTPUT_DIR/pope_metrics.json"
