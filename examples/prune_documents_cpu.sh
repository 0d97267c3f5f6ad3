#!/usr/bin/env bash
# Document-level valuation and a CCNet-style perplexity filter, on the default corpus, on
# CPU, under build/prune/ (shared with examples/prune_data_cpu.sh):
#   1-3. the corpus slices, tokenizer, token stores and the small reference GPT of
#        examples/prune_data_cpu.sh (its steps 1-3);
#   4. the analyzer scores every document of the main slice: its mean token loss and
#      perplexity under the reference, each document read as windows of 128 + 1 tokens;
#   5. inspect the perplexity index (quantiles, histogram PNG, lowest / highest decoded);
#   6. a pruned token store of the 70% of documents with the lowest perplexity, and one
#      without both tails (the 10th to 90th percentile).
# Each finished step is skipped on the next run (rm -rf build/prune/doc_* to redo 4-6).
set -euo pipefail
cd "$(dirname "$0")/.."
source examples/_python.sh
OUT=${OUT:-build/prune}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
step() { echo; echo "=== $*"; }

PRUNE_UNTIL=3 OUT="$OUT" bash examples/prune_data_cpu.sh
TOK=(--tokenizer-type GPTSentencePieceTokenizer --tokenizer-model "$OUT/sp.model")
MAIN=(--data-path "$OUT/main_text_document")

step "4 score the main slice's documents: loss and ppl under the reference -> $OUT/doc_index"
[[ -s $OUT/doc_index/ppl/meta.json ]] || "$PYTHON" tools/analyze_data.py "${MAIN[@]}" \
    --granularity document --metrics loss ppl --reference-load "$OUT/ref_ckpt" \
    --save-path "$OUT/doc_index"

step "5 inspect the document perplexities"
"$PYTHON" tools/inspect_index.py "$OUT/doc_index/ppl" --png "$OUT/doc_ppl_hist.png" --show 1 \
    --max-chars 200 "${MAIN[@]}" "${TOK[@]}"

step "6 CCNet-style filters: the lowest-perplexity 70% of documents; the 10th-90th percentile"
[[ -s $OUT/doc_ppl_low70.json ]] || "$PYTHON" tools/prune_data.py "${MAIN[@]}" \
    --index "$OUT/doc_index/ppl" --keep-fraction 0.7 --order easy \
    --output-prefix "$OUT/doc_ppl_low70"
[[ -s $OUT/doc_ppl_p10_p90.json ]] || "$PYTHON" tools/prune_data.py "${MAIN[@]}" \
    --index "$OUT/doc_index/ppl" --keep-percentile 10 90 --output-prefix "$OUT/doc_ppl_p10_p90"
