#!/usr/bin/env bash
# Small CPU run of GPT pretraining with random layerwise token dropping (random-LTD) on the
# default corpus (this Python's standard library source):
#   bash examples/pretrain_gpt_random_ltd_cpu.sh                 # random-LTD alone
#   CL=seqtru_voc bash examples/pretrain_gpt_random_ltd_cpu.sh   # + curriculum (paper's best)
# Layers 1..2 of 4 (all but the first and the last) keep 32 of the 128 tokens at step 0,
# growing by multiples of 16 to all 128 at step 70 (T_r = 70% of the steps, the paper's GPT
# preset). The LR schedule counts layer-weighted consumed tokens; TensorBoard shows the kept
# length as seqlen/random_ltd_reserved_length. Extra arguments go to pretrain_gpt.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

LTD_ARGS=(--random-ltd --random-ltd-min-seqlen 32 --random-ltd-total-steps 70
          --random-ltd-seq-per-step 16)

if [ -n "${CL:-}" ]; then
  # The curriculum recipe builds the data and the analyzer index; random-LTD rides along.
  OUT=${OUT:-build/example_random_ltd_$CL} CL=$CL \
      bash examples/pretrain_gpt_cl_cpu.sh "${LTD_ARGS[@]}" "$@"
  exit 0
fi

OUT=${OUT:-build/example_random_ltd}
DATA=${DATA:-build/example_cl_data}
mkdir -p "$DATA" "$OUT"

# 1. Corpus, tokenizer and token store (shared with the CL example; skipped when there).
if [ ! -f "$DATA/stdlib_text_document.idx" ]; then
  $PY tools/prepare_default_corpus.py --output "$DATA/stdlib.jsonl" --max-files 300 --skip-tests
  $PY tools/train_tokenizer.py --input "$DATA/stdlib.jsonl" --model-prefix "$DATA/stdlib_sp" \
      --vocab-size 4000
  $PY tools/preprocess_data.py --input "$DATA/stdlib.jsonl" --output-prefix "$DATA/stdlib" \
      --tokenizer-type GPTSentencePieceTokenizer --tokenizer-model "$DATA/stdlib_sp.model" \
      --append-eod --workers 1
fi

# 2. Train.
$PY pretrain_gpt.py \
    --num-layers 4 --hidden-size 128 --num-attention-heads 4 \
    --seq-length 128 --max-position-embeddings 128 --position-embedding-type rope \
    --micro-batch-size 4 --global-batch-size 8 \
    --lr 6e-4 --min-lr 6e-5 --lr-decay-style cosine --lr-warmup-fraction 0.05 \
    --weight-decay 0.1 --clip-grad 1.0 --seed 1234 \
    --train-iters 100 --eval-interval 50 --eval-iters 5 --log-interval 10 \
    --data-path "$DATA/stdlib_text_document" --split 949,50,1 \
    --tokenizer-type GPTSentencePieceTokenizer --tokenizer-model "$DATA/stdlib_sp.model" \
    --save "$OUT/checkpoints" --save-interval 50 --tensorboard-dir "$OUT/tensorboard" \
    "${LTD_ARGS[@]}" "$@"
