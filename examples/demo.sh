#!/usr/bin/env bash
# `make demo`: build a corpus, a tokenizer and a token store, index the training samples
# with the data analyzer, then pretrain a small GPT on CPU with the data-efficiency recipe
# of the paper (CL_seqtru_voc curriculum + random-LTD, LR schedule on consumed tokens), all
# under build/demo/. Each finished step is skipped on the next run; an interrupted
# training run resumes from its last checkpoint. About 5-10 minutes on 2 CPU cores.
# DEMO_PLAIN=1 trains the same model without curriculum and random-LTD, for comparison.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python}
OUT=build/demo
TRAIN_ITERS=${DEMO_TRAIN_ITERS:-250}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$OUT"
start=$(date +%s)
step() { echo; echo "=== [$(( $(date +%s) - start ))s] $*"; }

step "1/5 corpus: Python standard library source -> $OUT/stdlib.jsonl"
if [[ -s $OUT/stdlib.jsonl ]]; then
  echo "exists, skipping"
else
  "$PY" tools/prepare_default_corpus.py --output "$OUT/stdlib.jsonl.part" --skip-tests \
      --max-bytes 8000000
  mv "$OUT/stdlib.jsonl.part" "$OUT/stdlib.jsonl"
fi

step "2/5 tokenizer: SentencePiece BPE, 8000 pieces -> $OUT/stdlib_sp.model"
if [[ -s $OUT/stdlib_sp.model ]]; then
  echo "exists, skipping"
else
  "$PY" tools/train_tokenizer.py --input "$OUT/stdlib.jsonl" --model-prefix "$OUT/stdlib_sp" \
      --vocab-size 8000 --num-threads 2
fi

step "3/5 token store -> $OUT/stdlib_text_document.bin/.idx"
if [[ -s $OUT/stdlib_text_document.idx && -s $OUT/stdlib_text_document.bin ]]; then
  echo "exists, skipping"
else
  "$PY" tools/preprocess_data.py --input "$OUT/stdlib.jsonl" --output-prefix "$OUT/stdlib" \
      --tokenizer-type GPTSentencePieceTokenizer --tokenizer-model "$OUT/stdlib_sp.model" \
      --append-eod --workers 2
fi

SPLIT=98,2,0; SEQ=256; GBS=4; SEED=1234
step "4/5 data analyzer: voc (vocabulary rarity) of every training sample -> $OUT/index"
if [[ -s $OUT/index/voc/meta.json ]]; then
  echo "exists, skipping"
else
  "$PY" tools/analyze_data.py --data-path "$OUT/stdlib_text_document" --granularity sample \
      --split $SPLIT --seq-length $SEQ --seed $SEED --train-samples $((TRAIN_ITERS * GBS)) \
      --data-cache-path "$OUT/cache" --metrics total_vocab_freq voc --save-path "$OUT/index"
fi

# The paper's GPT presets (Table 1), scaled to this run: seqtru from 80/2048 of the length
# and voc from the easiest 1%, both over T_c = 40% of the steps; random-LTD keeps r_s = 128/2048
# of the tokens in the middle layers at first, reaching all of them at T_r = 70% of the steps.
CL_STEPS=$((TRAIN_ITERS * 4 / 10)); LTD_STEPS=$((TRAIN_ITERS * 7 / 10))
DATA_EFFICIENCY=(
  --data-efficiency-curriculum-learning --curriculum-metric seqtru voc
  --curriculum-index-path "$OUT/index/voc" --curriculum-difficulty-type value percentile
  --curriculum-min-difficulty 16 1 --curriculum-max-difficulty $SEQ 100
  --curriculum-schedule-type fixed_linear fixed_root --curriculum-total-steps $CL_STEPS
  --curriculum-difficulty-step 8 1 --curriculum-root-degree 1 2
  --random-ltd --random-ltd-min-seqlen 16 --random-ltd-total-steps $LTD_STEPS
  --random-ltd-seq-per-step 16)
[[ -n ${DEMO_PLAIN:-} ]] && DATA_EFFICIENCY=()

step "5/5 pretrain a GPT (4 layers, hidden 256, 4 heads, seq 256, rope) for $TRAIN_ITERS steps"
done_iter=$(cat "$OUT/checkpoints/latest_checkpointed_iteration.txt" 2>/dev/null || echo 0)
if [[ $done_iter -ge $TRAIN_ITERS ]]; then
  echo "checkpoint at iteration $done_iter exists, skipping (make clean-demo to start over)"
else
  "$PY" pretrain_gpt.py \
      --num-layers 4 --hidden-size 256 --num-attention-heads 4 \
      --seq-length 256 --max-position-embeddings 256 --position-embedding-type rope \
      --micro-batch-size 4 --global-batch-size $GBS --train-iters "$TRAIN_ITERS" \
      --lr 2e-3 --min-lr 2e-4 --lr-warmup-iters 15 --lr-decay-style cosine \
      --seed $SEED "${DATA_EFFICIENCY[@]}" \
      --weight-decay 0.01 --clip-grad 1.0 --hidden-dropout 0.0 --attention-dropout 0.0 \
      --data-path "$OUT/stdlib_text_document" --split $SPLIT \
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
  tokens=$(grep -o 'consumed tokens: *[0-9]*' "$OUT/train.log" | tail -1 | grep -o '[0-9]*$' || true)
  echo "training loss, first logged: ${first#lm loss: }   last logged: ${last#lm loss: }"
  echo "consumed tokens: ${tokens:-?} of $((TRAIN_ITERS * GBS * SEQ)) that $TRAIN_ITERS full" \
       "steps would take (curriculum + random-LTD, layer-weighted; DEMO_PLAIN=1 for none)"
  echo "${val:-no validation line found}"
fi
echo "training log:      $OUT/train.log"
echo "checkpoints:       $OUT/checkpoints"
echo "TensorBoard logs:  $OUT/tensorboard   (tensorboard --logdir $OUT/tensorboard)"
