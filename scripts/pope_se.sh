#!/usr/bin/env bash
# Semantic entropy on POPE, end to end: greedy answers + N samples (stage 1), clusters and
# uncertainty scores (stage 2), eval_pope and the AUROC/AUPR/AURAC/PRR table with plots (stage 3).
# Defaults run the embedded ShapesPOPE demo; point the variables at your checkpoint and POPE folder
# for the real benchmark. Every variable can also be set from the environment:
#     PER_CATEGORY=200 DEVICE=cuda bash scripts/pope_se.sh
# A stage whose output already covers every question is skipped, and an interrupted stage resumes,
# so rerunning after a crash continues where it stopped. Outputs of one setting go to
# $OUTPUT_DIR/<questions>_n<samples>_t<temperature>_seed<seed>/; the table is eval_<judge>/metrics.md, and
# report.html there shows every question (image, samples, scores) with the metrics and curves.
set -euo pipefail

# ---- config -------------------------------------------------------------------------------
MODEL_PATH=${MODEL_PATH:-playground/models/llava-v1.5-shapes-tiny}  # original layout or llava-hf folder
VISION_TOWER=${VISION_TOWER:-}            # local clip-vit-large-patch14-336 folder; empty = config's mm_vision_tower
POPE_DIR=${POPE_DIR:-playground/data/eval/shapes_pope}  # real POPE: playground/data/eval/pope
ANNOTATION_DIR=${ANNOTATION_DIR:-$POPE_DIR/coco}        # coco_pope_{adversarial,random,popular}.json
IMAGE_FOLDER=${IMAGE_FOLDER:-$POPE_DIR/images}          # real POPE: $POPE_DIR/val2014
QUESTION_FILE=${QUESTION_FILE:-$POPE_DIR/llava_pope_test.jsonl}
PER_CATEGORY=${PER_CATEGORY:-}            # e.g. 200: a reproducible subset per split; empty = all questions
SEED=${SEED:-0}                           # seed of the subset draw
CONV_MODE=${CONV_MODE:-vicuna_v1}
NUM_SAMPLES=${NUM_SAMPLES:-10}            # sampled answers per question
TEMPERATURE=${TEMPERATURE:-1.0}           # temperature of the samples (greedy answers stay greedy)
SAMPLE_SEED=${SAMPLE_SEED:-0}             # base seed of the samples; each question's seed derives from it
JUDGE=${JUDGE:-exact}                     # exact (free), nli or llm: how samples are grouped by meaning
JUDGE_MODEL=${JUDGE_MODEL:-}              # local model folder for JUDGE=nli or llm
BOOTSTRAP=${BOOTSTRAP:-1000}              # bootstrap resamples of the confidence intervals; 0 = none
DEVICE=${DEVICE:-auto}                    # cuda, cuda:1, cpu; auto = cuda if available
DTYPE=${DTYPE:-auto}                      # float16 (original), bfloat16, float32; auto = fp16 on CUDA
BATCH_SIZE=${BATCH_SIZE:-}                # questions per batch; empty = stage 1's default (128 with prefix sharing)
OUTPUT_DIR=${OUTPUT_DIR:-runs/pope_se/$(basename "$MODEL_PATH")}
PYTHON=${PYTHON:-python}                  # the interpreter with this project installed
# ---------------------------------------------------------------------------------------------

mkdir -p "$OUTPUT_DIR"
if [ -n "$PER_CATEGORY" ]; then
    SUBSET_FILE="$OUTPUT_DIR/questions_pc${PER_CATEGORY}_seed${SEED}.jsonl"
    "$PYTHON" -m llava.eval.prepare_pope --pope-dir "$ANNOTATION_DIR" --output-file "$SUBSET_FILE" \
        --per-category "$PER_CATEGORY" --seed "$SEED"
    QUESTION_FILE=$SUBSET_FILE
fi

RUN_DIR="$OUTPUT_DIR/$(basename "${QUESTION_FILE%.jsonl}")_n${NUM_SAMPLES}_t${TEMPERATURE}_seed${SAMPLE_SEED}"
ANSWERS_FILE="$RUN_DIR/answers.jsonl"
GENERATIONS_FILE="$RUN_DIR/generations.jsonl"
JUDGE_TAG="$JUDGE${JUDGE_MODEL:+_$(basename "$JUDGE_MODEL")}"
UNCERTAINTY_FILE="$RUN_DIR/uncertainty_${JUDGE_TAG}.jsonl"
EVAL_DIR="$RUN_DIR/eval_${JUDGE_TAG}"
mkdir -p "$RUN_DIR"

# True when the JSON-lines file $1 has a record for every question_id of the question file.
covers_every_question() {
    "$PYTHON" - "$1" "$QUESTION_FILE" <<'PY'
import sys
from llava.jsonl_io import JsonlError, iter_jsonl

output_file, question_file = sys.argv[1:]
try:
    done = {record.get("question_id") for _, record in iter_jsonl(output_file)}
except (OSError, JsonlError):  # absent, or a partial last line: not complete
    sys.exit(1)
wanted = {record["question_id"] for _, record in iter_jsonl(question_file)}
sys.exit(0 if wanted <= done else 1)
PY
}

# ---- stage 1: greedy answer + samples with token log-probs ----------------------------------
if covers_every_question "$GENERATIONS_FILE" && covers_every_question "$ANSWERS_FILE"; then
    echo "stage 1: $GENERATIONS_FILE is complete, skipping"
else
    vision_args=()
    [ -n "$VISION_TOWER" ] && vision_args=(--vision-tower "$VISION_TOWER")
    batch_args=()
    [ -n "$BATCH_SIZE" ] && batch_args=(--batch-size "$BATCH_SIZE")
    "$PYTHON" -m semantic_entropy.model_vqa_loader \
        --model-path "$MODEL_PATH" "${vision_args[@]}" \
        --question-file "$QUESTION_FILE" \
        --image-folder "$IMAGE_FOLDER" \
        --answers-file "$ANSWERS_FILE" \
        --generations-file "$GENERATIONS_FILE" \
        --temperature 0 \
        --sampling-temperature "$TEMPERATURE" \
        --num-samples "$NUM_SAMPLES" \
        --seed "$SAMPLE_SEED" \
        --conv-mode "$CONV_MODE" \
        --device "$DEVICE" --dtype "$DTYPE" "${batch_args[@]}"
fi

# ---- stage 2: cluster by meaning, uncertainty scores ----------------------------------------
if covers_every_question "$UNCERTAINTY_FILE"; then
    echo "stage 2: $UNCERTAINTY_FILE is complete, skipping"
else
    judge_args=()
    [ -n "$JUDGE_MODEL" ] && judge_args=(--judge-model "$JUDGE_MODEL")
    "$PYTHON" -m semantic_entropy.compute_se_myself \
        --generations-file "$GENERATIONS_FILE" \
        --output-file "$UNCERTAINTY_FILE" \
        --judge "$JUDGE" "${judge_args[@]}" \
        --device "$DEVICE"
fi

# ---- stage 3: greedy POPE metrics, then uncertainty vs correctness --------------------------
"$PYTHON" -m llava.eval.eval_pope \
    --annotation-dir "$ANNOTATION_DIR" \
    --question-file "$QUESTION_FILE" \
    --result-file "$ANSWERS_FILE" \
    --output-json "$RUN_DIR/pope_metrics.json"

"$PYTHON" -m semantic_entropy.eval_auroc \
    --uncertainty-file "$UNCERTAINTY_FILE" \
    --answers-file "$ANSWERS_FILE" \
    --annotation-dir "$ANNOTATION_DIR" \
    --question-file "$QUESTION_FILE" \
    --output-dir "$EVAL_DIR" \
    --bootstrap "$BOOTSTRAP" \
    --print headline

echo "full table (paired differences, every split and metric): $EVAL_DIR/metrics.md"

# ---- results browser: every question with its samples, scores and curves, in one HTML file ---
"$PYTHON" -m semantic_entropy.report --run-dir "$RUN_DIR" --eval-dir "$EVAL_DIR" --output "$RUN_DIR/report.html"
