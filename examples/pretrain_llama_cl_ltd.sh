#!/usr/bin/env bash
# A Llama-style 1.1B model pretrained with the paper's best data-efficiency recipe:
# CL_seqtru_voc + random-LTD at the paper's GPT-3 pretraining settings (Li et al., AAAI
# 2024, Table 1), LR schedule on consumed tokens.
#
#   DATA=/data/pile/pile_llama_text_document TOKENIZER=path/to/llama-2-tokenizer \
#   NNODES=8 NODE_RANK=0 MASTER_ADDR=host0 bash examples/pretrain_llama_cl_ltd.sh
#
#   DRY_RUN=1 bash examples/pretrain_llama_cl_ltd.sh    # the whole recipe on CPU, minutes
#
# The model is TinyLlama-1.1B's shape (Zhang et al. 2024, arXiv 2401.02385; the config.json
# of TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T): Llama-2 architecture, 22
# layers, hidden 2048, SwiGLU FFN 5632, 32 query heads in 4 key/value groups (head size
# 64), sequence 2048, rotary positions with base 10000, RMSNorm (eps 1e-5), no biases,
# untied output layer, no dropout, and Llama-2's 32,000-token vocabulary. Its optimizer
# settings are TinyLlama's too: AdamW (0.9, 0.95), LR 4e-4 cosine to 4e-5, 2,000 warmup
# steps of its 2M-token batch (1024 x 2048; here as tokens), weight decay 0.1, clipping 1.0.
# The token budget is the paper's for its GPT-3 1.3B (300B tokens, TOKENS_FRACTION=0.5 of
# it by default: the recipe reached the baseline's quality with half the data there).
# Steps:
#   1. the token store: tools/preprocess_data.py --append-eod with the same tokenizer
#      (a Hugging Face tokenizer folder: --tokenizer-type HuggingFaceTokenizer; or Llama's
#      SentencePiece tokenizer.model: GPTSentencePieceTokenizer) -> $DATA.bin/.idx
#   2. the voc index of every training sample (once; MPI, CPU only) -> $INDEX/voc
#   3. pretraining with torchrun on every node
# The analyzer gets the same run-sizing flags as training (SIZING, examples/_cl_ltd_sizing.sh)
# and sizes the index with training's own function (megatron/run_plan.py): the two agree.
#
# DRY_RUN=1 runs all three steps on the default corpus (this Python's standard library,
# with a SentencePiece tokenizer trained on it: examples/_dry_run_data.sh) with the model
# and the budget shrunk (4 layers, hidden 64, 4 heads in 2 groups, FFN 176, sequence 128,
# 12 steps), in one CPU process, under $OUT (default build/dry_run_llama); everything else
# (the Llama layer, the schedules, the optimizer) is the recipe's.
set -euo pipefail
cd "$(dirname "$0")/.."

source examples/_python.sh
source examples/_dry_run_data.sh
source examples/_cl_ltd_sizing.sh
DRY_RUN=${DRY_RUN:-0}
TOKENS_FRACTION=${TOKENS_FRACTION:-0.5}      # of the 300B-token baseline budget
LR=${LR:-4.0e-4}; MIN_LR=${MIN_LR:-4.0e-5}

if [[ $DRY_RUN == 1 ]]; then
  OUT=${OUT:-build/dry_run_llama}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
  dry_run_data "$OUT"
  DATA=$OUT/corpus_text_document
  TOKENIZER=(--tokenizer-type GPTSentencePieceTokenizer --tokenizer-model "$OUT/sp.model")
  SEQ=128; GBS=8; MBS=4; BASE_TOKENS=$(( 12 * GBS * SEQ * 2 ))   # 12 nominal steps at 0.5
  SHAPE=(--num-layers 4 --hidden-size 64 --ffn-hidden-size 176 --num-attention-heads 4
         --num-query-groups 2)
  PARALLEL=(); PRECISION=(); ANALYZER=("$PYTHON"); LAUNCH=("$PYTHON")
  WARMUP_TOKENS=$(( GBS * SEQ ))
  EVAL=(--eval-interval 6 --eval-iters 2); LOGS=(--log-interval 2 --save-interval 6)
else
  DATA=${DATA:?set DATA to the token store prefix (without .bin/.idx)}
  TOKENIZER_PATH=${TOKENIZER:?set TOKENIZER to the Llama tokenizer: a local Hugging Face tokenizer folder, or its SentencePiece tokenizer.model}
  if [[ $TOKENIZER_PATH == *.model ]]; then
    TOKENIZER=(--tokenizer-type GPTSentencePieceTokenizer --tokenizer-model "$TOKENIZER_PATH")
  else
    TOKENIZER=(--tokenizer-type HuggingFaceTokenizer --tokenizer-model "$TOKENIZER_PATH")
  fi
  OUT=${OUT:-runs/llama_1.1B_cl_ltd}
  NNODES=${NNODES:-8}; GPUS_PER_NODE=${GPUS_PER_NODE:-8}; NODE_RANK=${NODE_RANK:-0}
  MASTER_ADDR=${MASTER_ADDR:-localhost}; MASTER_PORT=${MASTER_PORT:-6000}
  SEQ=2048; GBS=1024; MBS=${MBS:-4}; BASE_TOKENS=300000000000
  SHAPE=(--num-layers 22 --hidden-size 2048 --ffn-hidden-size 5632 --num-attention-heads 32
         --num-query-groups 4)
  # query groups must divide by TP (4 groups: TP 1, 2 or 4)
  PARALLEL=(--tensor-model-parallel-size "${TP:-1}" --pipeline-model-parallel-size "${PP:-1}")
  PRECISION=(--bf16 --use-distributed-optimizer)
  ANALYZER=("$MPIEXEC" -n "${ANALYZER_RANKS:-32}" "$PYTHON")
  LAUNCH=("${TORCHRUN[@]}" --nnodes "$NNODES" --nproc_per_node "$GPUS_PER_NODE" --node_rank "$NODE_RANK"
          --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT")
  WARMUP_TOKENS=$(( 2000 * GBS * SEQ ))        # TinyLlama's 2,000 warmup steps
  EVAL=(--eval-interval 1000 --eval-iters 10); LOGS=(--log-interval 10 --save-interval 2000)
fi
# The Llama layer (Megatron-LM's flag names; examples/mds/ has Megatron-DeepSpeed's).
MODEL=("${SHAPE[@]}" --group-query-attention --normalization RMSNorm --layernorm-epsilon 1e-5
       --swiglu --position-embedding-type rope --no-position-embedding --rotary-base 10000
       --disable-bias-linear --untie-embeddings-and-output-weights
       --hidden-dropout 0 --attention-dropout 0 --init-method-std 0.02)
TRAIN_TOKENS=$("$PYTHON" -c "print(int($BASE_TOKENS * $TOKENS_FRACTION))")
cl_ltd_sizing                                  # SIZING: examples/_cl_ltd_sizing.sh

# 2. Offline index of the training samples (once).
index_samples

# 3. Train.
"${LAUNCH[@]}" pretrain_gpt.py "${MODEL[@]}" "${SIZING[@]}" \
    --seq-length $SEQ --max-position-embeddings $SEQ \
    --micro-batch-size $MBS "${PARALLEL[@]}" "${PRECISION[@]}" \
    --lr "$LR" --min-lr "$MIN_LR" --lr-decay-style cosine \
    --lr-warmup-tokens "$WARMUP_TOKENS" --lr-decay-tokens "$TRAIN_TOKENS" \
    --weight-decay 0.1 --clip-grad 1.0 --adam-beta1 0.9 --adam-beta2 0.95 --seed $SEED \
    --data-path "$DATA" --split $SPLIT "${TOKENIZER[@]}" --data-cache-path "$OUT/cache" \
    "${LOGS[@]}" \
    --save "$OUT/checkpoints" --load "$OUT/checkpoints" --exit-signal-handler \
    --tensorboard-dir "$OUT/tensorboard" "$@"
