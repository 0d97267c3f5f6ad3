#!/usr/bin/env bash
# Continued pretraining of a Hugging Face model (LlamaForCausalLM; GPT2LMHeadModel and
# GPTNeoXForCausalLM too) with CL_seqtru_voc + random-LTD at the paper's GPT-3 pretraining
# settings (Li et al., AAAI 2024, Table 1), the LR schedule on consumed tokens:
#
#   HF_MODEL=path/to/llama DATA_JSONL=corpus.jsonl bash examples/continue_pretraining_cl_ltd.sh
#
# HF_MODEL is a local transformers directory (config.json, model.safetensors, its tokenizer
# files), e.g. one saved by save_pretrained; nothing is downloaded. The steps, under $OUT:
#   1. import it: tools/checkpoint_util.py --loader hf -> imported/ (TP x PP layout); the
#      model and tokenizer flags that build it are read back from the import
#   2. tokenize DATA_JSONL with the model's own tokenizer (tools/preprocess_data.py
#      --append-eod) -> data/ (or give DATA: a token store made with that tokenizer)
#   3. the voc index of every training sample (tools/analyze_data.py), sized by the run's
#      own flags (examples/_cl_ltd_sizing.sh)
#   4. continue pretraining from the imported weights (--finetune --load imported):
#      TRAIN_TOKENS consumed tokens, CL_seqtru_voc + random-LTD -> checkpoints/ (a rerun
#      resumes from there)
#   5. export the result back to transformers -> EXPORT (default $OUT/hf: config, weights,
#      the tokenizer files)
# Each finished step is kept and reused by a rerun (an OUT belongs to one HF_MODEL). A
# finished export is never replaced silently: a rerun whose EXPORT holds one stops at once
# with an error, unless REPLACE_EXPORT=1 (the new export then replaces it, once written)
# or EXPORT names a fresh folder.
# Every size is an environment variable (defaults below: a GPU node, bf16); flags after the
# script's name go to pretrain_gpt.py. tests/hf/test_continue_pretraining_example.py runs it
# on CPU with a tiny Llama it makes with transformers.
set -euo pipefail
cd "$(dirname "$0")/.."
source examples/_python.sh
source examples/_cl_ltd_sizing.sh
source examples/_hf_export.sh
HF_MODEL=${HF_MODEL:?set HF_MODEL to a local transformers model directory}
OUT=${OUT:-build/continue_pretraining}
EXPORT=${EXPORT:-$OUT/hf}
TP=${TP:-1}; PP=${PP:-1}; NPROC=${NPROC:-8}
TRAIN_TOKENS=${TRAIN_TOKENS:-1000000000}; GBS=${GBS:-256}; MBS=${MBS:-1}
LR=${LR:-3e-5}; MIN_LR=${MIN_LR:-3e-6}                # re-warmed over 1% of the tokens
WARMUP_TOKENS=${WARMUP_TOKENS:-$(( TRAIN_TOKENS / 100 ))}
EVAL=(--eval-interval "${EVAL_INTERVAL:-200}" --eval-iters "${EVAL_ITERS:-20}")
LOGS=(--log-interval "${LOG_INTERVAL:-10}" --save-interval "${SAVE_INTERVAL:-1000}")
PRECISION=(${PRECISION---bf16 --use-distributed-optimizer})   # PRECISION= : fp32
WORKERS=${WORKERS:-8}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
check_export                 # before hours of training: examples/_hf_export.sh
if [[ ! -f $HF_MODEL/config.json ]]; then
  echo "error: HF_MODEL=$HF_MODEL has no config.json: give a local transformers model folder" >&2
  exit 2
fi
SOURCE=$(cd "$HF_MODEL" && pwd -P)
mkdir -p "$OUT"
if [[ -f $OUT/hf_model.txt && $(cat "$OUT/hf_model.txt") != "$SOURCE" ]]; then
  echo "error: $OUT continues $(cat "$OUT/hf_model.txt"), not $SOURCE; give another OUT" >&2
  exit 2
fi
echo "$SOURCE" > "$OUT/hf_model.txt"
if [[ $NPROC -gt 1 ]]; then
  LAUNCH=("${TORCHRUN[@]}" --standalone --nproc-per-node "$NPROC")
else
  LAUNCH=("$PYTHON")
fi
ANALYZER=("$PYTHON")

# 1. import, and the flags that build the imported model (the ones the import prints)
if [[ ! -f $OUT/imported/latest_checkpointed_iteration.txt ]]; then
  "$PYTHON" tools/checkpoint_util.py --loader hf --load-dir "$HF_MODEL" --save-dir "$OUT/imported" \
      --target-tensor-parallel-size "$TP" --target-pipeline-parallel-size "$PP"
fi
mapfile -t IMPORTED < <("$PYTHON" - "$OUT/imported" <<'EOF'
import sys
from megatron.checkpointing.whole_model import read_run_config
from megatron.hf.convert import model_flags
from megatron.hf.hf_dir import tokenizer_flags
config = read_run_config(sys.argv[1])[1]
print(config.model.max_position_embeddings)             # the sequence length, by default
print("\n".join(model_flags(config)))
for flag in tokenizer_flags(config.tokenizer):
    print("\n".join(flag.split(" ", 1)))
EOF
)
if [[ ${#IMPORTED[@]} -lt 2 ]]; then
  echo "error: could not read the model flags of $OUT/imported (see above)" >&2
  exit 2
fi
SEQ=${SEQ:-${IMPORTED[0]}}
MODEL=("${IMPORTED[@]:1}")                   # --num-layers N first: cl_ltd_sizing reads it
TOKENIZER=()
for (( i = 1; i < ${#MODEL[@]}; i++ )); do   # the tokenizer flags, for preprocessing
  [[ ${MODEL[i]} == --tokenizer-type ]] && TOKENIZER=("${MODEL[@]:i}") && break
done

# 2. tokenize with the model's own tokenizer
if [[ -n ${DATA:-} ]]; then
  :
elif [[ ${TOKENIZER[1]:-NullTokenizer} == NullTokenizer ]]; then
  echo "error: $HF_MODEL has no tokenizer files: give DATA, a token store made with its vocabulary" >&2
  exit 2
else
  DATA=$OUT/data/corpus_text_document
  if [[ ! -f $DATA.idx ]]; then
    mkdir -p "$OUT/data"
    "$PYTHON" tools/preprocess_data.py --input "${DATA_JSONL:?set DATA_JSONL (or DATA)}" \
        --output-prefix "$OUT/data/corpus" "${TOKENIZER[@]}" --append-eod --workers "$WORKERS"
  fi
fi

# 3. the voc index (once); SIZING: the paper's CL_seqtru_voc + random-LTD settings
cl_ltd_sizing
index_samples

# 4. continue pretraining from the imported weights (a rerun resumes from the last save)
START=(--finetune --load "$OUT/imported")
[[ -f $OUT/checkpoints/latest_checkpointed_iteration.txt ]] && START=(--load "$OUT/checkpoints")
"${LAUNCH[@]}" pretrain_gpt.py "${MODEL[@]}" "${SIZING[@]}" "${START[@]}" \
    --seq-length "$SEQ" --tensor-model-parallel-size "$TP" --pipeline-model-parallel-size "$PP" \
    --micro-batch-size "$MBS" "${PRECISION[@]}" \
    --lr "$LR" --min-lr "$MIN_LR" --lr-decay-style cosine \
    --lr-warmup-tokens "$WARMUP_TOKENS" --lr-decay-tokens "$TRAIN_TOKENS" \
    --weight-decay 0.1 --clip-grad 1.0 --adam-beta1 0.9 --adam-beta2 0.95 --seed $SEED \
    --data-path "$DATA" --split $SPLIT --data-cache-path "$OUT/cache" "${LOGS[@]}" \
    --save "$OUT/checkpoints" --exit-signal-handler --tensorboard-dir "$OUT/tensorboard" "$@"

# 5. back to transformers
export_hf "$OUT/checkpoints"
