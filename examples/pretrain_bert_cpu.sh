#!/usr/bin/env bash
# A tiny BERT pretraining recipe for CPU, with Megatron-LM's flags, on the default corpus
# (this Python's standard library source). Builds, once, under build/demo_bert/:
#   stdlib.jsonl               tools/prepare_default_corpus.py (first $MAX_BYTES bytes)
#   vocab.txt                  tools/build_wordpiece_vocab.py (WordPiece, lower case)
#   stdlib_text_sentence.*     tools/preprocess_data.py --split-sentences
# then pretrains (masked-LM + sentence-order loss) for $ITERS steps or $MINUTES minutes.
# Re-running resumes from build/demo_bert/checkpoints.
#
#   bash examples/pretrain_bert_cpu.sh
#   ITERS=50 MINUTES=1 bash examples/pretrain_bert_cpu.sh       # a quicker look
#   NPROC=2 bash examples/pretrain_bert_cpu.sh                  # data parallel on 2 CPU ranks
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-build/demo_bert}
MAX_BYTES=${MAX_BYTES:-6000000}
VOCAB_SIZE=${VOCAB_SIZE:-5000}
ITERS=${ITERS:-300}
MINUTES=${MINUTES:-4}
NPROC=${NPROC:-1}
source examples/_python.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$OUT"

# Each step is skipped when its output exists (the tools write to temp names and rename,
# so an interrupted step leaves no output behind).
[[ -f $OUT/stdlib.jsonl ]] || "$PYTHON" tools/prepare_default_corpus.py \
  --output "$OUT/stdlib.jsonl" --skip-tests --max-bytes "$MAX_BYTES"
[[ -f $OUT/vocab.txt ]] || "$PYTHON" tools/build_wordpiece_vocab.py \
  --input "$OUT/stdlib.jsonl" --output "$OUT/vocab.txt" --vocab-size "$VOCAB_SIZE"
[[ -f $OUT/stdlib_text_sentence.idx ]] || "$PYTHON" tools/preprocess_data.py \
  --input "$OUT/stdlib.jsonl" --output-prefix "$OUT/stdlib" --split-sentences \
  --tokenizer-type BertWordPieceLowerCase --vocab-file "$OUT/vocab.txt" --workers 2 \
  --log-interval 100

MODEL=(
  --num-layers 2 --hidden-size 128 --num-attention-heads 4
  --seq-length 128 --max-position-embeddings 128
)
TRAINING=(
  --micro-batch-size 8 --global-batch-size 16 --train-iters "$ITERS"
  --lr 1e-3 --min-lr 1e-4 --lr-decay-style linear --lr-warmup-fraction 0.05
  --weight-decay 0.01 --clip-grad 1.0
  --exit-duration-in-mins "$MINUTES"
)
DATA_ARGS=(
  --data-path "$OUT/stdlib_text_sentence" --split 949,50,1
  --tokenizer-type BertWordPieceLowerCase --vocab-file "$OUT/vocab.txt"
  --mask-prob 0.15 --short-seq-prob 0.1
  --data-cache-path "$OUT/cache" --num-workers 1
)
OUTPUT=(
  --log-interval 10 --eval-interval 100 --eval-iters 5
  --tensorboard-dir "$OUT/tensorboard"
  --save "$OUT/checkpoints" --load "$OUT/checkpoints" --save-interval 100
)

if [[ $NPROC -gt 1 ]]; then
  LAUNCH=("${TORCHRUN[@]}" --standalone --nproc-per-node "$NPROC")
else
  LAUNCH=("$PYTHON")
fi
"${LAUNCH[@]}" pretrain_bert.py "${MODEL[@]}" "${TRAINING[@]}" "${DATA_ARGS[@]}" "${OUTPUT[@]}"
