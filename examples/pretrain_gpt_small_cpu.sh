#!/usr/bin/env bash
# A small GPT pretraining recipe for CPU, with Megatron-LM's flags. Build the data first:
#
#   python tools/prepare_default_corpus.py --output data/stdlib.jsonl --skip-tests
#   python tools/train_tokenizer.py --input data/stdlib.jsonl --model-prefix data/stdlib_sp \
#       --vocab-size 8000
#   python tools/preprocess_data.py --input data/stdlib.jsonl --output-prefix data/stdlib \
#       --tokenizer-type GPTSentencePieceTokenizer --tokenizer-model data/stdlib_sp.model \
#       --append-eod --workers 2
#
# Data parallel on several CPU processes (gloo):  NPROC=2 bash examples/pretrain_gpt_small_cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-data/stdlib_text_document}
TOKENIZER=${TOKENIZER:-data/stdlib_sp.model}
RUN=${RUN:-runs/gpt_small_cpu}
NPROC=${NPROC:-1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

MODEL=(
  --num-layers 6 --hidden-size 384 --num-attention-heads 6
  --seq-length 512 --max-position-embeddings 512
  --position-embedding-type rope
  --hidden-dropout 0.0 --attention-dropout 0.0
)
TRAINING=(
  --micro-batch-size 4 --global-batch-size 16
  --train-tokens 20000000                          # stop after 20M consumed tokens
  --lr 1e-3 --min-lr 1e-4 --lr-decay-style cosine
  --lr-warmup-fraction 0.02                        # of the token-based decay span
  --weight-decay 0.1 --clip-grad 1.0 --adam-beta2 0.95
)
DATA_ARGS=(
  --data-path "$DATA" --split 98,2,0
  --tokenizer-type GPTSentencePieceTokenizer --tokenizer-model "$TOKENIZER"
  --data-cache-path "$RUN/cache" --num-workers 1
)
OUTPUT=(
  --log-interval 10 --eval-interval 200 --eval-iters 20
  --tensorboard-dir "$RUN/tensorboard"
  --save "$RUN/checkpoints" --load "$RUN/checkpoints" --save-interval 200
)

if [[ $NPROC -gt 1 ]]; then
  LAUNCH=(torchrun --standalone --nproc-per-node "$NPROC")
else
  LAUNCH=(python)
fi
"${LAUNCH[@]}" pretrain_gpt.py "${MODEL[@]}" "${TRAINING[@]}" "${DATA_ARGS[@]}" "${OUTPUT[@]}"
