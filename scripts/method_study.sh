#!/usr/bin/env bash
# Vision-aware uncertainty study (docs/method.md), run as the method-v2 protocol:
#   1. validation world (PHASE=validation): every pass, then scripts/choose_method_settings.py fits the
#      grounding calibration and chooses every method-v2 hyperparameter, the best published baseline and
#      the primary candidate on it; the validation table is evaluated with those settings. The choices are
#      committed (semantic_entropy/scoring/method_v2_settings.json, docs/method.md) before step 2.
#   2. test worlds (PHASE=test): the shipped test world and a second test world of another seed, scored
#      with the committed settings, each evaluated twice: paired against yes_no_entropy and against the best
#      published baseline. scripts/method_v2_table.py writes the protocol's tables and metrics.
# Per world: stage 1 with the degraded-image passes (--image-variants), the probes pass, the p(True) pass,
# the baseline pass (docs/baselines.md), the method-v2 pass (grounding, erased object region, crops), stage 2
# (every registered measure), the fitted combination and the p(yes)-only controls (cross-validated across
# images), eval_pope and the AUROC/AUPR/PRR tables with image-clustered paired bootstrap intervals.
# Defaults run the embedded ShapesPOPE demo on CPU (PHASE=all: validation, then test). Real POPE on a GPU
# with a real checkpoint needs a held-out validation POPE (e.g. POPE built on A-OKVQA or GQA):
#     MODEL_PATH=/models/llava-v1.5-7b VISION_TOWER=/models/clip-vit-large-patch14-336 \
#     POPE_DIR=playground/data/eval/pope IMAGE_FOLDER=playground/data/eval/pope/val2014 \
#     VAL_POPE_DIR=playground/data/eval/pope_aokvqa VAL_IMAGE_FOLDER=playground/data/eval/pope_aokvqa/images \
#     TEST2_POPE_DIR=none METHOD_SETTINGS=runs/llava7b_method_v2_settings.json DEVICE=cuda \
#     PHASE=validation bash scripts/method_study.sh    # then copy the chosen settings, commit, PHASE=test
# Every variable can be set from the environment. A finished stage is skipped; an interrupted one resumes.
set -euo pipefail

# ---- config -------------------------------------------------------------------------------
MODEL_PATH=${MODEL_PATH:-playground/models/llava-v1.5-shapes-tiny}  # original layout or llava-hf folder
VISION_TOWER=${VISION_TOWER:-}            # local CLIP folder; empty = config's mm_vision_tower
POPE_DIR=${POPE_DIR:-playground/data/eval/shapes_pope}  # the shipped test world
IMAGE_FOLDER=${IMAGE_FOLDER:-$POPE_DIR/images}          # real POPE: $POPE_DIR/val2014
PHASE=${PHASE:-all}                       # validation, test or all
VAL_SEED=${VAL_SEED:-1019}                # ShapesPOPE seed of the validation world (never the shipped test seed)
TEST2_SEED=${TEST2_SEED:-2029}            # ShapesPOPE seed of the second test world (nothing is tuned on it)
WORLD_IMAGES=${WORLD_IMAGES:-}            # images of the generated ShapesPOPE worlds; empty = the generator's default
VAL_POPE_DIR=${VAL_POPE_DIR:-}            # empty = ShapesPOPE generated with VAL_SEED under OUTPUT_DIR
VAL_IMAGE_FOLDER=${VAL_IMAGE_FOLDER:-}    # empty = VAL_POPE_DIR/images
TEST2_POPE_DIR=${TEST2_POPE_DIR:-}        # empty = ShapesPOPE generated with TEST2_SEED; none = no second test world
METHOD_SETTINGS=${METHOD_SETTINGS:-semantic_entropy/scoring/method_v2_settings.json}  # what the test worlds use
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
METHOD_ARGS=${METHOD_ARGS:-}              # extra flags of semantic_entropy.method_probes (e.g. --grounding-layers 8,16,24)
COMBINED_FEATURES=${COMBINED_FEATURES:-yes_no_entropy,semantic_entropy,visual_contrast_noise,image_independence_mean,image_independence_blur,image_independence_noise,image_independence_mask_attended,image_independence_mask_random,wording_perturbation_yes_no_entropy}
PARALLEL=${PARALLEL:-0}                    # 1 = the two test worlds run side by side (two processes)
PYTHON=${PYTHON:-python}
# ---------------------------------------------------------------------------------------------

if [ ! -e "$MODEL_PATH" ]; then
    echo "model $MODEL_PATH is absent (the ShapesPOPE demo model is trained by scripts/train_shapes_llava.py)" >&2
    exit 1
fi
case "$PHASE" in validation|test|all) ;; *) echo "PHASE must be validation, test or all, got $PHASE" >&2; exit 1;; esac
SHAPES=0
[ "$(realpath "$POPE_DIR")" = "$(realpath playground/data/eval/shapes_pope)" ] && SHAPES=1
if [ -z "$VAL_POPE_DIR" ] || [ -z "$TEST2_POPE_DIR" ]; then
    if [ "$SHAPES" != 1 ]; then
        echo "set VAL_POPE_DIR (a held-out validation POPE) and TEST2_POPE_DIR (or none) for $POPE_DIR" >&2
        exit 1
    fi
fi
VAL_POPE_DIR=${VAL_POPE_DIR:-$OUTPUT_DIR/worlds/shapes_pope_seed$VAL_SEED}
TEST2_POPE_DIR=${TEST2_POPE_DIR:-$OUTPUT_DIR/worlds/shapes_pope_seed$TEST2_SEED}
VAL_IMAGE_FOLDER=${VAL_IMAGE_FOLDER:-$VAL_POPE_DIR/images}

vision_args=()
[ -n "$VISION_TOWER" ] && vision_args=(--vision-tower "$VISION_TOWER")
batch_args=()
[ -n "$BATCH_SIZE" ] && batch_args=(--batch-size "$BATCH_SIZE")
baseline_args=()
[ -n "$VAUQ_SETTING" ] && baseline_args+=(--vauq-setting "$VAUQ_SETTING")
[ -n "$VL_SETTING" ] && baseline_args+=(--vl-setting "$VL_SETTING")
baseline_args+=(--vl-blur-only-ablation)  # our ablation beside the published detectors (docs/baselines.md)
read -r -a method_args <<< "$METHOD_ARGS"
model_args=(--model-path "$MODEL_PATH" "${vision_args[@]}" --conv-mode "$CONV_MODE" --device "$DEVICE" --dtype "$DTYPE")

make_world() {  # make_world DIR SEED: a ShapesPOPE world of another seed (skipped when present)
    [ -e "$1/llava_pope_test.jsonl" ] || "$PYTHON" scripts/make_shapes_pope.py --output-dir "$1" --seed "$2" \
        ${WORLD_IMAGES:+--num-test-images "$WORLD_IMAGES"}
}

run_passes() {  # run_passes POPE_DIR IMAGE_FOLDER RUN_DIR: every pass up to the scored input ($RUN_DIR/scored_input.jsonl)
    local pope=$1 images=$2 run=$3
    local questions="$pope/llava_pope_test.jsonl" generations="$run/generations.jsonl"
    local probed="$run/generations_probes_m${MASK_FRACTION}.jsonl"
    local ptrue="$run/generations_probes_m${MASK_FRACTION}_ptrue.jsonl"
    local baselines="$run/generations_probes_m${MASK_FRACTION}_ptrue_baselines${VAUQ_SETTING:+_vauq-$VAUQ_SETTING}${VL_SETTING:+_vl-$VL_SETTING}.jsonl"
    mkdir -p "$run"
    # stage 1 resumes by question_id: rerunning after a crash continues
    "$PYTHON" -m semantic_entropy.model_vqa_loader "${model_args[@]}" \
        --question-file "$questions" --image-folder "$images" \
        --answers-file "$run/answers.jsonl" --generations-file "$generations" \
        --temperature 0 --sampling-temperature "$TEMPERATURE" --num-samples "$NUM_SAMPLES" \
        --seed "$SAMPLE_SEED" --image-variants "$IMAGE_VARIANTS" "${batch_args[@]}"
    "$PYTHON" -m semantic_entropy.vision_probes "${model_args[@]}" --image-folder "$images" \
        --generations-file "$generations" --output-file "$probed" \
        --mask-fraction "$MASK_FRACTION" --seed "$SAMPLE_SEED"
    "$PYTHON" -m semantic_entropy.p_true "${model_args[@]}" --image-folder "$images" \
        --generations-file "$probed" --output-file "$ptrue"
    "$PYTHON" -m semantic_entropy.baseline_probes "${model_args[@]}" --image-folder "$images" \
        --generations-file "$ptrue" --output-file "$baselines" --seed "$SAMPLE_SEED" "${baseline_args[@]}"
    "$PYTHON" -m semantic_entropy.method_probes "${model_args[@]}" --image-folder "$images" \
        --generations-file "$baselines" --output-file "$run/scored_input.jsonl" "${method_args[@]}"
    "$PYTHON" -m llava.eval.eval_pope --annotation-dir "$pope/coco" --question-file "$questions" \
        --result-file "$run/answers.jsonl" --output-json "$run/pope_metrics.json"
}

score_and_evaluate() {  # score_and_evaluate POPE_DIR RUN_DIR SETTINGS TITLE: stage 2, fits, two paired evals
    local pope=$1 run=$2 settings=$3 title=$4
    local questions="$pope/llava_pope_test.jsonl" labels=(--annotation-dir "$pope/coco" --question-file "$pope/llava_pope_test.jsonl")
    rm -f "$run"/uncertainty_exact*.jsonl  # scores follow the settings file: recomputed every run (cheap)
    METHOD_V2_SETTINGS=$settings "$PYTHON" -m semantic_entropy.compute_se_myself \
        --generations-file "$run/scored_input.jsonl" --output-file "$run/uncertainty_exact.jsonl" --judge exact
    "$PYTHON" -m semantic_entropy.fitted_combination --uncertainty-file "$run/uncertainty_exact.jsonl" \
        --answers-file "$run/answers.jsonl" "${labels[@]}" --features "$COMBINED_FEATURES" \
        --output-file "$run/uncertainty_exact_cv.jsonl" --seed "$SAMPLE_SEED"
    # controls: the best function of p(yes) alone, one map per answer direction, folds by image
    "$PYTHON" -m semantic_entropy.fitted_combination --uncertainty-file "$run/uncertainty_exact_cv.jsonl" \
        --answers-file "$run/answers.jsonl" "${labels[@]}" --features p_no --by-answer --model isotonic \
        --name cv_p_yes_isotonic --output-file "$run/uncertainty_exact_cv_iso.jsonl" --seed "$SAMPLE_SEED"
    "$PYTHON" -m semantic_entropy.fitted_combination --uncertainty-file "$run/uncertainty_exact_cv_iso.jsonl" \
        --answers-file "$run/answers.jsonl" "${labels[@]}" --features p_no --by-answer --model logistic \
        --name cv_p_yes_logistic --output-file "$run/uncertainty_exact_final.jsonl" --seed "$SAMPLE_SEED"
    local baseline
    baseline=$("$PYTHON" -c "import json,sys; print(json.load(open(sys.argv[1])).get('best_published_baseline') or 'vauq')" "$settings")
    for reference in yes_no_entropy "$baseline"; do
        local folder="$run/eval_vs_entropy"
        [ "$reference" = yes_no_entropy ] || folder="$run/eval_vs_baseline"
        "$PYTHON" -m semantic_entropy.eval_auroc --uncertainty-file "$run/uncertainty_exact_final.jsonl" \
            --answers-file "$run/answers.jsonl" "${labels[@]}" --output-dir "$folder" --bootstrap "$BOOTSTRAP" \
            --compare-to "$reference" --title "$title, paired against $reference" --print none
    done
    for reference in cv_p_yes_logistic cv_logistic; do  # the candidates paired against the controls
        "$PYTHON" -m semantic_entropy.eval_auroc --uncertainty-file "$run/uncertainty_exact_final.jsonl" \
            --answers-file "$run/answers.jsonl" "${labels[@]}" --output-dir "$run/eval_vs_$reference" \
            --bootstrap "$BOOTSTRAP" --compare-to "$reference" --no-plots --print none \
            --measures counterfactual_disagreement grounding_disagreement prior_vauq yes_no_entropy \
            cv_p_yes_logistic cv_logistic
    done
}

VAL_RUN="$OUTPUT_DIR/validation"
if [ "$PHASE" != test ]; then
    [ "$SHAPES" = 1 ] && make_world "$VAL_POPE_DIR" "$VAL_SEED"
    run_passes "$VAL_POPE_DIR" "$VAL_IMAGE_FOLDER" "$VAL_RUN"
    "$PYTHON" scripts/choose_method_settings.py --generations-file "$VAL_RUN/scored_input.jsonl" \
        --answers-file "$VAL_RUN/answers.jsonl" --annotation-dir "$VAL_POPE_DIR/coco" \
        --question-file "$VAL_POPE_DIR/llava_pope_test.jsonl" --output "$VAL_RUN/method_v2_settings.json" \
        --markdown "$VAL_RUN/choice.md" \
        --fitted-on "$(basename "$VAL_POPE_DIR") (validation), $(basename "$MODEL_PATH")"
    score_and_evaluate "$VAL_POPE_DIR" "$VAL_RUN" "$VAL_RUN/method_v2_settings.json" "Validation world"
    if ! "$PYTHON" -c "import json,sys; a,b=(json.load(open(p)) for p in sys.argv[1:]); keys=('grounding','counterfactual','prior_vauq','primary','best_published_baseline'); sys.exit(any(a.get(k)!=b.get(k) for k in keys))" \
        "$VAL_RUN/method_v2_settings.json" "$METHOD_SETTINGS"; then
        echo "note: $METHOD_SETTINGS differs from the validation choice $VAL_RUN/method_v2_settings.json;" \
             "commit the choice (and docs/method.md) before PHASE=test" >&2
    fi
fi

if [ "$PHASE" != validation ]; then
    if ! "$PYTHON" -c "import json,sys; sys.exit(json.load(open(sys.argv[1])).get('fitted_on') is None)" "$METHOD_SETTINGS"; then
        echo "$METHOD_SETTINGS was not fitted on a validation world: run PHASE=validation and commit its choice first" >&2
        exit 1
    fi
    worlds=(--world "validation=$VAL_RUN/eval_vs_entropy,$VAL_RUN/eval_vs_baseline")
    [ -e "$VAL_RUN/eval_vs_baseline/metrics.json" ] || worlds=()
    TEST_RUN="$OUTPUT_DIR/test_shipped"
    TEST2_RUN="$OUTPUT_DIR/test_second"
    test_shipped() {
        run_passes "$POPE_DIR" "$IMAGE_FOLDER" "$TEST_RUN"
        score_and_evaluate "$POPE_DIR" "$TEST_RUN" "$METHOD_SETTINGS" "Shipped test world ($(basename "$POPE_DIR"))"
    }
    test_second() {
        [ "$SHAPES" = 1 ] && make_world "$TEST2_POPE_DIR" "$TEST2_SEED"
        run_passes "$TEST2_POPE_DIR" "$TEST2_POPE_DIR/images" "$TEST2_RUN"
        score_and_evaluate "$TEST2_POPE_DIR" "$TEST2_RUN" "$METHOD_SETTINGS" "Second test world ($(basename "$TEST2_POPE_DIR"))"
    }
    if [ "$TEST2_POPE_DIR" = none ]; then
        test_shipped
    elif [ "$PARALLEL" = 1 ]; then  # the two test worlds side by side (two processes)
        mkdir -p "$OUTPUT_DIR"
        test_shipped > "$OUTPUT_DIR/test_shipped.log" 2>&1 & shipped=$!
        test_second > "$OUTPUT_DIR/test_second.log" 2>&1 & second=$!
        wait "$shipped" || { echo "shipped test world failed: $OUTPUT_DIR/test_shipped.log" >&2; exit 1; }
        wait "$second" || { echo "second test world failed: $OUTPUT_DIR/test_second.log" >&2; exit 1; }
    else
        test_shipped
        test_second
    fi
    worlds+=(--world "test_shipped=$TEST_RUN/eval_vs_entropy,$TEST_RUN/eval_vs_baseline")
    [ "$TEST2_POPE_DIR" = none ] || worlds+=(--world "test_second=$TEST2_RUN/eval_vs_entropy,$TEST2_RUN/eval_vs_baseline")
    "$PYTHON" scripts/method_v2_table.py "${worlds[@]}" --settings "$METHOD_SETTINGS" \
        --output-json "$OUTPUT_DIR/method_v2_metrics.json" --output-md "$OUTPUT_DIR/method_v2_tables.md"
    echo "full tables (every split and metric): $TEST_RUN/eval_vs_entropy/metrics.md, $TEST_RUN/eval_vs_baseline/metrics.md"
    # ---- results browser of the shipped test world: every question with its samples, scores and curves ---
    "$PYTHON" -m semantic_entropy.report --run-dir "$TEST_RUN" --eval-dir "$TEST_RUN/eval_vs_entropy" \
        --output "$TEST_RUN/report.html"
fi
