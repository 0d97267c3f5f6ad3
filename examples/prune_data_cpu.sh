#!/usr/bin/env bash
# Data pruning / valuation walk-through on the default corpus, on CPU, under build/prune/:
#   1. corpus (this Python's standard library, seeded shuffled order), cut into a reference
#      slice (the first quarter of the documents) and a disjoint main slice;
#   2. one SentencePiece tokenizer; a token store per slice;
#   3. a small reference GPT trained on the reference slice;
#   4. the analyzer scores every training sample of the main slice by its loss under it;
#   5. inspect the index (quantiles, histogram PNG, easiest / hardest samples decoded);
#   6. a pruned token store (the middle half by loss) and its manifest;
#   7. four runs on the main slice at equal steps and tokens, same validation set: all
#      data, and percentile windows over the loss index: middle [25, 75], easy [0, 50],
#      hard [50, 100]. Prints each run's final validation loss.
# Each finished step is skipped on the next run (rm -rf build/prune to start over). Sizes:
# PRUNE_ITERS (steps of each run in 7, default 200), PRUNE_REF_ITERS (the reference model's
# steps, 200), PRUNE_CORPUS_BYTES (the corpus, 6000000), PRUNE_VOCAB (the tokenizer's
# vocabulary, 4000), OUT (build/prune);
# PRUNE_UNTIL=N stops after step N.
set -euo pipefail
cd "$(dirname "$0")/.."
source examples/_python.sh
OUT=${OUT:-build/prune}
ITERS=${PRUNE_ITERS:-200}; REF_ITERS=${PRUNE_REF_ITERS:-200}
SHORTEST=$(( ITERS < REF_ITERS ? ITERS : REF_ITERS ))
WARMUP=$(( SHORTEST < 20 ? (SHORTEST + 1) / 2 : 10 ))   # 10 steps, or half a shrunk run
SEQ=128; GBS=8; SEED=1234; SPLIT=95,5,0
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$OUT"
step() { echo; echo "=== $*"; }

step "1 corpus -> $OUT/ref.jsonl (first quarter) and $OUT/main.jsonl (the rest)"
if [[ ! -s $OUT/main.jsonl ]]; then
  "$PYTHON" tools/prepare_default_corpus.py --output "$OUT/all.jsonl" --skip-tests --max-bytes "${PRUNE_CORPUS_BYTES:-6000000}"
  n=$(wc -l < "$OUT/all.jsonl")
  head -n $((n / 4)) "$OUT/all.jsonl" > "$OUT/ref.jsonl"
  tail -n +$((n / 4 + 1)) "$OUT/all.jsonl" > "$OUT/main.jsonl.part"
  mv "$OUT/main.jsonl.part" "$OUT/main.jsonl"
fi

step "2 tokenizer and token stores"
TOK=(--tokenizer-type GPTSentencePieceTokenizer --tokenizer-model "$OUT/sp.model")
[[ -s $OUT/sp.model ]] || "$PYTHON" tools/train_tokenizer.py --input "$OUT/all.jsonl" \
    --model-prefix "$OUT/sp" --vocab-size "${PRUNE_VOCAB:-4000}" --num-threads 2
for s in ref main; do
  [[ -s $OUT/${s}_text_document.idx ]] || "$PYTHON" tools/preprocess_data.py \
      --input "$OUT/$s.jsonl" --output-prefix "$OUT/$s" "${TOK[@]}" --append-eod --workers 2
done

MODEL=(--num-layers 2 --hidden-size 128 --num-attention-heads 4 --seq-length $SEQ
       --max-position-embeddings $SEQ --position-embedding-type rope --micro-batch-size $GBS
       --global-batch-size $GBS --lr 2e-3 --min-lr 2e-4 --lr-warmup-iters $WARMUP
       --lr-decay-style cosine --weight-decay 0.01 --clip-grad 1.0 --hidden-dropout 0.0
       --attention-dropout 0.0 --seed $SEED --split $SPLIT "${TOK[@]}"
       --data-cache-path "$OUT/cache" --num-workers 1 --log-interval 50)

step "3 reference model on the reference slice ($REF_ITERS steps) -> $OUT/ref_ckpt"
[[ -s $OUT/ref_ckpt/latest_checkpointed_iteration.txt ]] || "$PYTHON" pretrain_gpt.py "${MODEL[@]}" \
    --train-iters "$REF_ITERS" --data-path "$OUT/ref_text_document" --eval-interval 1000 \
    --eval-iters 1 --save "$OUT/ref_ckpt" --save-interval "$REF_ITERS" 2>&1 | tee "$OUT/ref_train.log"

[[ ${PRUNE_UNTIL:-7} -ge 4 ]] || exit 0    # examples/prune_documents_cpu.sh needs steps 1-3

step "4 score the main slice's training samples: loss under the reference -> $OUT/index/loss"
DATA=(--data-path "$OUT/main_text_document" --split $SPLIT --seq-length $SEQ --seed $SEED
      --train-samples $((ITERS * GBS)))
[[ -s $OUT/index/loss/meta.json ]] || "$PYTHON" tools/analyze_data.py "${DATA[@]}" \
    --granularity sample --data-cache-path "$OUT/cache" --metrics loss \
    --reference-load "$OUT/ref_ckpt" --save-path "$OUT/index"

step "5 inspect the loss index"
"$PYTHON" tools/inspect_index.py "$OUT/index/loss" --png "$OUT/loss_hist.png" --show 1 \
    --max-chars 300 "${DATA[@]}" --data-cache-path "$OUT/cache" "${TOK[@]}"

step "6 a pruned token store: the middle half by loss -> $OUT/pruned_middle50"
[[ -s $OUT/pruned_middle50.json ]] || "$PYTHON" tools/prune_data.py "${DATA[@]}" \
    --data-cache-path "$OUT/cache" --index "$OUT/index/loss" --keep-percentile 25 75 \
    --output-prefix "$OUT/pruned_middle50"

step "7 equal-token runs on the main slice ($ITERS steps each)"
window() {   # lo hi -> the curriculum flags of a static percentile window over the loss index
  echo --data-efficiency-curriculum-learning --curriculum-metric loss \
       --curriculum-index-path "$OUT/index/loss" --curriculum-difficulty-type percentile_window \
       --curriculum-window-low "$1" --curriculum-min-difficulty "$2" --curriculum-max-difficulty "$2"
}
declare -A ARMS=([all]="" [middle50]="$(window 25 75)" [easy50]="$(window 0 50)"
                 [hard50]="$(window 50 100)")
for arm in all middle50 easy50 hard50; do
  log="$OUT/arm_$arm.log"
  grep -q "validation loss at iteration $ITERS" "$log" 2>/dev/null || \
    "$PYTHON" pretrain_gpt.py "${MODEL[@]}" --train-iters "$ITERS" --data-path "$OUT/main_text_document" \
        --eval-interval "$ITERS" --eval-iters 20 ${ARMS[$arm]} 2>&1 | tee "$log"
  val=$(grep -o "validation loss at iteration $ITERS | lm loss value: [0-9.E+-]*" "$log" | tail -1)
  echo "$arm: ${val##*: }"
done
