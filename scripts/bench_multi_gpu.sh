#!/usr/bin/env bash
# Stage 1 and the attention batch mode on one GPU and on two (torchrun), with a 7B-shaped random
# checkpoint on POPE's structure: questions/s of each and whether the merged outputs equal the
# one-GPU outputs.
# Usage (on a 2-GPU machine): bash scripts/bench_multi_gpu.sh POPE_DIR TOKENIZER_DIR WORK_DIR [ATTENTION_QUESTIONS (default 1024)]
set -euo pipefail
POPE_DIR=$1; TOKENIZER_DIR=$2; WORK=$3; ATTENTION_QUESTIONS=${4:-1024}
export PYTHONPATH=.
python scripts/make_random_llava.py --output-dir "$WORK" --pope-dir "$POPE_DIR" --tokenizer-dir "$TOKENIZER_DIR"
data=(--model-path "$WORK/llava-v1.5-7b-random" --question-file "$WORK/llava_pope_test.jsonl"
      --image-folder "$WORK/images" --conv-mode vicuna_v1 --dtype bfloat16)
stage1=("${data[@]}" --temperature 0 --num-samples 10)
python -m semantic_entropy.model_vqa_loader "${stage1[@]}" --answers-file "$WORK/one/answers.jsonl" 2>&1 | grep -E "stage 1|Error" || true
torchrun --nproc_per_node 2 -m semantic_entropy.model_vqa_loader "${stage1[@]}" --answers-file "$WORK/two/answers.jsonl" 2>&1 | grep -E "stage 1|Error" || true
attention=("${data[@]}" --batch-size 16 --max-pages 0 --limit "$ATTENTION_QUESTIONS")
python -m semantic_entropy.visualize_attention "${attention[@]}" --output-dir "$WORK/att_one" 2>&1 | grep -E "questions_per_second|Error" || true
torchrun --nproc_per_node 2 -m semantic_entropy.visualize_attention "${attention[@]}" --output-dir "$WORK/att_two" 2>&1 | grep -E "questions_per_second|Error" || true
python scripts/compare_multi_gpu_outputs.py "$WORK"
