#!/usr/bin/env bash
# Finetune a Hugging Face GPT-2 with curriculum learning (seqres) + random-LTD: the paper's
# GPT-2 finetuning case (Li et al. 2024, section 4.3; Table 1: CL seqres d_s = 32,
# T_c = 70% of the steps; random-LTD r_s = 128, T_r = 30%).
#
#   HF_MODEL=path/to/gpt2 DATA_JSONL=corpus.jsonl bash examples/finetune_gpt2_cl_ltd.sh
#
# HF_MODEL is a local transformers GPT2LMHeadModel directory (config.json, model.safetensors
# or pytorch_model.bin, vocab.json, merges.txt), e.g. one saved by save_pretrained; nothing is
# downloaded. The steps:
#   1. import it: tools/checkpoint_util.py --loader hf -> $OUT/imported (TP x PP layout)
#   2. tokenize DATA_JSONL with its BPE: tools/preprocess_data.py -> $OUT/data
#   3. the imported model's perplexity on the validation split (--split), no training
#   4. finetune from it (--finetune) with CL seqres + random-LTD, validating as it goes
#   5. export the result back to transformers: EXPORT (default $OUT/hf; a finished
#      export is kept: a rerun stops at once unless REPLACE_EXPORT=1, examples/_hf_export.sh)
# The validation lines ("validation loss at iteration N | lm loss value: ... PPL: ...") of
# steps 3 and 4 are in $OUT/baseline.log and $OUT/finetune.log.
#
# Sizes default to the paper's GPT-2 (seq 1024, the Table-1 settings); every one can be set
# from the environment (the CPU test shrinks them for a tiny model).
set -euo pipefail
cd "$(dirname "$0")/.."
source examples/_python.sh
source examples/_hf_export.sh
HF_MODEL=${HF_MODEL:?set HF_MODEL to a local GPT-2 directory}
DATA_JSONL=${DATA_JSONL:?set DATA_JSONL to a jsonl corpus, one JSON object with a text key per line}
OUT=${OUT:-build/finetune_gpt2}
EXPORT=${EXPORT:-$OUT/hf}
TP=${TP:-1}; PP=${PP:-1}; NPROC=$((TP * PP))
SEQ=${SEQ:-1024}
TRAIN_ITERS=${TRAIN_ITERS:-2000}; MBS=${MBS:-4}; GBS=${GBS:-32}
LR=${LR:-5e-5}; MIN_LR=${MIN_LR:-5e-6}
EVAL_INTERVAL=${EVAL_INTERVAL:-200}; EVAL_ITERS=${EVAL_ITERS:-20}
SPLIT=${SPLIT:-949,50,1}; SEED=${SEED:-1234}
CL_MIN=${CL_MIN:-32}                              # d_s
CL_STEPS=${CL_STEPS:-$((TRAIN_ITERS * 70 / 100))}  # T_c = 70%
LTD_MIN=${LTD_MIN:-128}                            # r_s
LTD_STEPS=${LTD_STEPS:-$((TRAIN_ITERS * 30 / 100))} # T_r = 30%
LTD_STEP=${LTD_STEP:-16}
WORKERS=${WORKERS:-2}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
check_export
mkdir -p "$OUT"

if [[ $NPROC -gt 1 ]]; then
  LAUNCH=("${TORCHRUN[@]}" --standalone --nproc-per-node "$NPROC")
else
  LAUNCH=("$PYTHON")
fi

# The model's shape, from its config.json (GPT-2 names).
read -r LAYERS HIDDEN HEADS POSITIONS < <("$PYTHON" -c '
import json, sys
c = json.load(open(sys.argv[1]))
if c.get("model_type") != "gpt2":
    sys.exit(sys.argv[1] + ": model_type " + repr(c.get("model_type")) + ", expected gpt2")
print(c["n_layer"], c["n_embd"], c["n_head"], c["n_positions"])' "$HF_MODEL/config.json")
if [[ $SEQ -gt $POSITIONS ]]; then
  echo "SEQ=$SEQ exceeds the model's $POSITIONS positions" >&2; exit 2
fi

# 1. import
if [[ ! -f "$OUT/imported/latest_checkpointed_iteration.txt" ]]; then
  "$PYTHON" tools/checkpoint_util.py --loader hf --load-dir "$HF_MODEL" --save-dir "$OUT/imported" \
      --target-tensor-parallel-size "$TP" --target-pipeline-parallel-size "$PP"
fi

# 2. tokenize with the model's own BPE
TOKENIZER=(--tokenizer-type GPT2BPETokenizer --vocab-file "$HF_MODEL/vocab.json"
           --merge-file "$HF_MODEL/merges.txt")
if [[ ! -f "$OUT/data/corpus_text_document.idx" ]]; then
  mkdir -p "$OUT/data"
  "$PYTHON" tools/preprocess_data.py --input "$DATA_JSONL" --output-prefix "$OUT/data/corpus" \
      "${TOKENIZER[@]}" --append-eod --workers "$WORKERS"
fi

COMMON=(
  --num-layers "$LAYERS" --hidden-size "$HIDDEN" --num-attention-heads "$HEADS"
  --seq-length "$SEQ" --max-position-embeddings "$POSITIONS"
  --tensor-model-parallel-size "$TP" --pipeline-model-parallel-size "$PP"
  --micro-batch-size "$MBS" --global-batch-size "$GBS"
  --lr "$LR" --min-lr "$MIN_LR" --lr-decay-style cosine --lr-warmup-fraction 0.01
  --weight-decay 0.01 --clip-grad 1.0 --seed "$SEED"
  --data-path "$OUT/data/corpus_text_document" --split "$SPLIT" "${TOKENIZER[@]}"
  --data-cache-path "$OUT/cache" --num-workers 2
  --eval-iters "$EVAL_ITERS" --log-interval 10
  --finetune --load "$OUT/imported"
)

# 3. the imported model's validation perplexity (no training step: the last iteration is 0)
"${LAUNCH[@]}" pretrain_gpt.py "${COMMON[@]}" --train-iters 0 --eval-interval 0 \
    2>&1 | tee "$OUT/baseline.log"

# 4. finetune: CL seqres (token-count difficulty d_s -> SEQ over T_c) + random-LTD
DATA_EFFICIENCY=(
  --data-efficiency-curriculum-learning --curriculum-metric seqres
  --curriculum-difficulty-type value --curriculum-min-difficulty "$CL_MIN"
  --curriculum-max-difficulty "$SEQ" --curriculum-schedule-type fixed_linear
  --curriculum-total-steps "$CL_STEPS" --curriculum-difficulty-step 8
  --random-ltd --random-ltd-min-seqlen "$LTD_MIN" --random-ltd-total-steps "$LTD_STEPS"
  --random-ltd-seq-per-step "$LTD_STEP"
)
if [[ ! -f "$OUT/checkpoints/latest_checkpointed_iteration.txt" ]]; then   # done on a rerun
  "${LAUNCH[@]}" pretrain_gpt.py "${COMMON[@]}" "${DATA_EFFICIENCY[@]}" \
      --train-iters "$TRAIN_ITERS" --eval-interval "$EVAL_INTERVAL" \
      --save "$OUT/checkpoints" --save-interval "$TRAIN_ITERS" \
      --tensorboard-dir "$OUT/tensorboard" 2>&1 | tee "$OUT/finetune.log"
fi

# 5. back to transformers
export_hf "$OUT/checkpoints"
grep -h "validation loss at iteration" "$OUT/baseline.log" "$OUT/finetune.log"
