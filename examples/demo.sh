#!/usr/bin/env bash
# `make demo`: build a corpus, a tokenizer and a token store, then pretrain a small GPT on
# CPU, all under build/demo/. Each finished step is skipped on the next run; an interrupted
# training run resumes from its last checkpoint. About 5-10 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python}
OUT=build/demo
TRAIN_ITERS=${DEMO_TRAIN_ITERS:-250}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$OUT"
start=$(date +%s)
step() { echo; echo "=== [$(( $(date +%s) - start ))s] $*"; }

step "1/4 corpus: Python standard library source -> $OUT/stdlib.jsonl"
if [[ -s $OUT/stdlib.jsonl ]]; then
  echo "exists, skipping"
else
  "$PY" tools/prepare_default_corpus.py --output "$OUT/stdlib.jsonl.part" --skip-tests \
      --max-bytes 8000000
  mv "$OUT/stdlib.jsonl.part" "$OUT/stdlib.jsonl"
fi

step "2/4 tokenizer: SentencePiece BPE, 8000 pieces -> $OUT/stdlib_sp.model"
if [[ -s $OUT/stdlib_sp.model ]]; then
  echo "exists, skipping"
else
  "$PY" tools/train_tokenizer.py --input "$OUT/stdlib.jsonl" --model-prefix "$OUT/stdlib_sp" \
      --vocab-size 8000 --num-threads 2
fi

step "3/4 token store -> $OUT/stdlib_text_document.bin/.idx"
if [[ -s $OUT/stdlib_text_document.idx && -s $OUT/stdlib_text_document.bin ]]; then
  echo "exists, skipping"
else
  "$PY" tools/preprocess_data.py --input "$OUT/stdlib.jsonl" --output-prefix "$OUT/stdlib" \
      --tokenizer-type GPTSentencePieceTokenizer --tokenizer-model "$OUT/stdlib_sp.model" \
      --append-eod --workers 2
fi

step "4/4 pretrain a GPT (4 layers, hidden 256, 4 heads, seq 256, rope) for $TRAIN_ITERS steps"
done_iter=$(cat "$OUT/checkpoints/latest_checkpointed_iteration.txt" 2>/dev/null || echo 0)
if [[ $done_iter -ge $TRAIN_ITERS ]]; then
  echo "checkpoint at iteration $done_iter exists, skipping (make clean-demo to start over)"
else
  "$PY" pretrain_gpt.py \
      --num-layers 4 --hidden-size 256 --num-attention-heads 4 \
      --seq-length 256 --max-position-embeddings 256 --position-embedding-type rope \
      --micro-batch-size 4 --global-batch-size 4 --train-iters "$TRAIN_ITERS" \
      --lr 2e-3 --min-lr 2e-4 --lr-warmup-iters 15 --lr-decay-style cosine \
      --weight-decay 0.01 --clip-grad 1.0 --hidden-dropout 0.0 --attention-dropout 0.0 \
      --data-path "$OUT/stdlib_text_document" --split 98,2,0 \
      --tokenizer-type GPTSentencePieceTokenizer --tokenizer-model "$OUT/stdlib_sp.model" \
      --data-cache-path "$OUT/cache" --num-workers 1 \
      --log-interval 10 --eval-interval 50 --eval-iters 10 \
      --tensorboard-dir "$OUT/tensorboard" \
      --save "$OUT/checkpoints" --load "$OUT/checkpoints" --save-interval 50 \
      2>&1 | tee "$OUT/train.log"
fi

step "done in $(( $(date +%s) - start ))s"
if [[ -s $OUT/train.log ]]; then
  first=$(grep -m1 -o 'lm loss: [0-9.E+-]*' "$OUT/train.log" || true)
  last=$(grep -o 'lm loss: [0-9.E+-]*' "$OUT/train.log" | tail -1 || true)
  val=$(grep -o 'validation loss at iteration [0-9]* | lm loss value: [0-9.E+-]*' \
        "$OUT/train.log" | tail -1 || true)
  echo "training loss, first logged: ${first#lm loss: }   last logged: ${last#lm loss: }"
  echo "${val:-no validation line found}"
fi
echo "training log:      $OUT/train.log"
echo "checkpoints:       $OUT/checkpoints"
echo "TensorBoard logs:  $OUT/tensorboard   (tensorboard --logdir $OUT/tensorboard)"
