#!/usr/bin/env bash
# Stage 1 on one GPU and on two (torchrun) with a 7B-shaped random checkpoint on POPE's structure:
# questions/s of each and whether the merged outputs equal the one-GPU outputs.
# Usage (on a 2-GPU machine): bash scripts/bench_multi_gpu.sh POPE_DIR TOKENIZER_DIR WORK_DIR
set -euo pipefail
POPE_DIR=$1; TOKENIZER_DIR=$2; WORK=$3
export PYTHONPATH=.
python scripts/make_random_llava.py --output-dir "$WORK" --pope-dir "$POPE_DIR" --tokenizer-dir "$TOKENIZER_DIR"
common=(--model-path "$WORK/llava-v1.5-7b-random" --question-file "$WORK/llava_pope_test.jsonl"
        --image-folder "$WORK/images" --temperature 0 --conv-mode vicuna_v1 --dtype bfloat16 --num-samples 10)
python -m semantic_entropy.model_vqa_loader "${common[@]}" --answers-file "$WORK/one/answers.jsonl" 2>&1 | grep -E "stage 1|Error" || true
torchrun --nproc_per_node 2 -m semantic_entropy.model_vqa_loader "${common[@]}" --answers-file "$WORK/two/answers.jsonl" 2>&1 | grep -E "stage 1|Error" || true
python - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
load = lambda p: [json.loads(l) for l in open(p)]
one, two = load(f"{work}/one/answers.generations.jsonl"), load(f"{work}/two/answers.generations.jsonl")
same_ids = [g["question_id"] for g in one] == [g["question_id"] for g in two]
strip = lambda g: [(a["token_ids"], a["text"]) for a in [g["greedy"], *g["samples"]]]
same_tokens = same_ids and all(strip(a) == strip(b) for a, b in zip(one, two))
max_dlogp = max(abs(x - y) for a, b in zip(one, two) for u, v in zip([a["greedy"], *a["samples"]], [b["greedy"], *b["samples"]])
                for x, y in zip(u["token_logprobs"], v["token_logprobs"]))
print(json.dumps({"questions": len(one), "same_ids_in_order": same_ids, "same_tokens_and_texts": same_tokens,
                  "max_abs_logprob_difference": max_dlogp}))
PY
