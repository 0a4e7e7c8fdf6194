#!/usr/bin/env bash
# Semantic entropy on POPE, end to end: greedy answers + N samples (stage 1), clusters and
# uncertainty scores (stage 2), eval_pope and the AUROC/AUPR/AURAC/PRR table with plots (stage 3).
# Defaults run the embedded ShapesPOPE demo; point the variables at your checkpoint and POPE folder
# for the real benchmark. Every variable can also be set from the environment:
#     PER_CATEGORY=200 DEVICE=cuda bash scripts/pope_se.sh
# A stage whose output already covers every question is skipped, and an interrupted stage resumes,
# so rerunning after a crash continues where it stopped. Outputs of one setting go to
# $OUTPUT_DIR/<questions>_n<samples>_t<temperature>_seed<seed>/ (free-form: ..._free_tok<max new tokens>/);
# the table is eval_<judge>/metrics.md, and report.html there shows every question (image, samples,
# scores) with the metrics and curves.
# Free-form answers: FREE_FORM=1 asks POPE's questions without the single-word instruction and needs a
# judge of meaning (JUDGE=nli or llm with JUDGE_MODEL). A QUESTION_FILE whose questions are not POPE's
# (LLaVA's open-ended format: question_id, image, text) has no labels: stage 3 then writes the score
# distributions (eval_<judge>/distributions.md) instead of AUROC, and report.html shows them.
#     FREE_FORM=1 JUDGE=llm JUDGE_MODEL=/ckpt/llava-v1.5-7b QUESTION_FILE=open.jsonl bash scripts/pope_se.sh
set -euo pipefail

# ---- config -------------------------------------------------------------------------------
MODEL_PATH=${MODEL_PATH:-playground/models/llava-v1.5-shapes-tiny}  # original layout or llava-hf folder
VISION_TOWER=${VISION_TOWER:-}            # local clip-vit-large-patch14-336 folder; empty = config's mm_vision_tower
POPE_DIR=${POPE_DIR:-playground/data/eval/shapes_pope}  # real POPE: playground/data/eval/pope
ANNOTATION_DIR=${ANNOTATION_DIR:-$POPE_DIR/coco}        # coco_pope_{adversarial,random,popular}.json
IMAGE_FOLDER=${IMAGE_FOLDER:-$POPE_DIR/images}          # real POPE: $POPE_DIR/val2014
QUESTION_FILE=${QUESTION_FILE:-}          # empty = POPE's ($POPE_DIR/llava_pope_test.jsonl, or prepared free-form)
PER_CATEGORY=${PER_CATEGORY:-}            # e.g. 200: a reproducible subset per split; empty = all questions
SEED=${SEED:-0}                           # seed of the subset draw
FREE_FORM=${FREE_FORM:-0}                 # 1: POPE without "Answer ... a single word or phrase.": sentence answers
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-128}     # answer length limit of stage 1 (LLaVA's 128); names free-form runs
CONV_MODE=${CONV_MODE:-vicuna_v1}
NUM_SAMPLES=${NUM_SAMPLES:-10}            # sampled answers per question
TEMPERATURE=${TEMPERATURE:-1.0}           # temperature of the samples (greedy answers stay greedy)
SAMPLE_SEED=${SAMPLE_SEED:-0}             # base seed of the samples; each question's seed derives from it
JUDGE=${JUDGE:-exact}                     # exact (free), nli or llm: how samples are grouped by meaning (free-form: nli or llm)
JUDGE_MODEL=${JUDGE_MODEL:-}              # local model folder for JUDGE=nli or llm
BOOTSTRAP=${BOOTSTRAP:-1000}              # bootstrap resamples of the confidence intervals; 0 = none
DEVICE=${DEVICE:-auto}                    # cuda, cuda:1, cpu; auto = cuda if available
DTYPE=${DTYPE:-auto}                      # float16 (original), bfloat16, float32; auto = fp16 on CUDA
BATCH_SIZE=${BATCH_SIZE:-}                # questions per batch; empty = stage 1's default (128 with prefix sharing)
OUTPUT_DIR=${OUTPUT_DIR:-runs/pope_se/$(basename "$MODEL_PATH")}
PYTHON=${PYTHON:-python}                  # the interpreter with this project installed
# ---------------------------------------------------------------------------------------------

case "$FREE_FORM" in
    0|1) ;;
    *) echo "error: FREE_FORM must be 0 or 1, not '$FREE_FORM'" >&2; exit 1 ;;
esac
# No default judge for sentences. The exact judge compares normalised strings, and its one reading of a
# sentence is eval_pope's: an answer to a yes/no question becomes a bare yes or no. On free-form POPE that
# leaves two clusters whatever else the sentences say, and on open-ended questions every differently
# worded sentence is a meaning of its own. Telling sentences apart by meaning takes a model, and which
# one (its cost, its verdicts on every score) is a choice the run's name and manifests should show.
if [ "$FREE_FORM" = 1 ] && [ "$JUDGE" = exact ]; then
    echo "error: FREE_FORM=1 needs a judge of meaning: set JUDGE=nli or JUDGE=llm with JUDGE_MODEL=<local model folder> (JUDGE=llm JUDGE_MODEL=\$MODEL_PATH asks LLaVA's own language model); the exact judge compares strings, or for a yes/no question only the yes or no a sentence reads as" >&2
    exit 1
fi

mkdir -p "$OUTPUT_DIR"
FREE_FORM_ARGS=()
FREE_TAG=""
if [ "$FREE_FORM" = 1 ]; then
    FREE_FORM_ARGS=(--free-form)
    FREE_TAG="_free"
fi
if [ -n "$PER_CATEGORY" ]; then
    QUESTION_FILE="$OUTPUT_DIR/questions${FREE_TAG}_pc${PER_CATEGORY}_seed${SEED}.jsonl"
    "$PYTHON" -m llava.eval.prepare_pope --pope-dir "$ANNOTATION_DIR" --output-file "$QUESTION_FILE" \
        --per-category "$PER_CATEGORY" --seed "$SEED" "${FREE_FORM_ARGS[@]}"
elif [ -z "$QUESTION_FILE" ] && [ "$FREE_FORM" = 1 ]; then
    QUESTION_FILE="$OUTPUT_DIR/questions_free.jsonl"
    "$PYTHON" -m llava.eval.prepare_pope --pope-dir "$ANNOTATION_DIR" --output-file "$QUESTION_FILE" --free-form
elif [ -z "$QUESTION_FILE" ]; then
    QUESTION_FILE=$POPE_DIR/llava_pope_test.jsonl
fi

# A free-form run never shares a folder with a single-word run of the same questions (stage 1 would
# count its answers as done), nor with one of another length limit.
RUN_NAME="$(basename "${QUESTION_FILE%.jsonl}")_n${NUM_SAMPLES}_t${TEMPERATURE}_seed${SAMPLE_SEED}"
[ "$FREE_FORM" = 1 ] && RUN_NAME="${RUN_NAME}_free_tok${MAX_NEW_TOKENS}"
RUN_DIR="$OUTPUT_DIR/$RUN_NAME"
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

# True when every question of the question file is one of POPE's splits, whose labels stage 3 joins;
# other question files (LLaVA's open-ended format) have no labels.
has_pope_labels() {
    "$PYTHON" - "$QUESTION_FILE" <<'PY'
import sys
from llava.eval.prepare_pope import POPE_CATEGORIES
from llava.jsonl_io import iter_jsonl

categories = {record.get("category") for _, record in iter_jsonl(sys.argv[1])}
sys.exit(0 if categories and categories <= set(POPE_CATEGORIES) else 1)
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
        --max-new-tokens "$MAX_NEW_TOKENS" \
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
if has_pope_labels; then
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
else
    echo "stage 3: the questions of $QUESTION_FILE are not POPE's, so there are no labels: score distributions, no AUROC"
    "$PYTHON" -m semantic_entropy.eval_auroc \
        --uncertainty-file "$UNCERTAINTY_FILE" \
        --answers-file "$ANSWERS_FILE" \
        --question-file "$QUESTION_FILE" \
        --output-dir "$EVAL_DIR" \
        --print headline

    echo "full table (every split and statistic): $EVAL_DIR/distributions.md"
fi

# ---- results browser: every question with its samples, scores and curves (or distributions), in one HTML file
"$PYTHON" -m semantic_entropy.report --run-dir "$RUN_DIR" --eval-dir "$EVAL_DIR" --output "$RUN_DIR/report.html"
