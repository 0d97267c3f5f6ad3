#!/usr/bin/env bash
# A small GPT pretraining recipe for CPU, with Megatron-LM's flags, on the default corpus
# (this Python's standard library source). Builds the data once (skipped when there):
#
#   tools/prepare_default_corpus.py (300 files) -> tools/train_tokenizer.py (4000 pieces)
#   -> tools/preprocess_data.py --append-eod     into $DATA (build/example_small_data)
#
# then trains a 4-layer GPT until 200k tokens are consumed (196 steps of 8 x 128),
# resuming from $RUN/checkpoints when re-run; SIGTERM / Ctrl-C saves and exits.
#
#   bash examples/pretrain_gpt_small_cpu.sh
#   NPROC=2 bash examples/pretrain_gpt_small_cpu.sh     # data parallel on 2 CPU processes (gloo)
set -euo pipefail
cd "$(dirname "$0")/.."

source examples/_python.sh
DATA=${DATA:-build/example_small_data}
RUN=${RUN:-build/example_small}
NPROC=${NPROC:-1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

if [ ! -s "$DATA/stdlib_text_document.idx" ]; then
  mkdir -p "$DATA"
  "$PYTHON" tools/prepare_default_corpus.py --output "$DATA/stdlib.jsonl" --max-files 300 --skip-tests
  "$PYTHON" tools/train_tokenizer.py --input "$DATA/stdlib.jsonl" --model-prefix "$DATA/stdlib_sp" \
      --vocab-size 4000
  "$PYTHON" tools/preprocess_data.py --input "$DATA/stdlib.jsonl" --output-prefix "$DATA/stdlib" \
      --tokenizer-type GPTSentencePieceTokenizer --tokenizer-model "$DATA/stdlib_sp.model" \
      --append-eod --workers 2
fi

MODEL=(
  --num-layers 4 --hidden-size 128 --num-attention-heads 4
  --seq-length 128 --max-position-embeddings 128
  --position-embedding-type rope
  --hidden-dropout 0.0 --attention-dropout 0.0
)
TRAINING=(
  --micro-batch-size 4 --global-batch-size 8
  --train-tokens 200000                            # stop after 200k consumed tokens
  --lr 1e-3 --min-lr 1e-4 --lr-decay-style cosine
  --lr-warmup-fraction 0.05                        # of the token-based decay span
  --weight-decay 0.1 --clip-grad 1.0 --adam-beta2 0.95
)
DATA_ARGS=(
  --data-path "$DATA/stdlib_text_document" --split 949,50,1
  --tokenizer-type GPTSentencePieceTokenizer --tokenizer-model "$DATA/stdlib_sp.model"
  --data-cache-path "$RUN/cache"
)
OUTPUT=(
  --log-interval 20 --eval-interval 100 --eval-iters 5
  --tensorboard-dir "$RUN/tensorboard" --exit-signal-handler
  --save "$RUN/checkpoints" --load "$RUN/checkpoints" --save-interval 100
)

if [[ $NPROC -gt 1 ]]; then
  LAUNCH=("${TORCHRUN[@]}" --standalone --nproc-per-node "$NPROC")
else
  LAUNCH=("$PYTHON")
fi
"${LAUNCH[@]}" pretrain_gpt.py "${MODEL[@]}" "${TRAINING[@]}" "${DATA_ARGS[@]}" "${OUTPUT[@]}" "$@"
