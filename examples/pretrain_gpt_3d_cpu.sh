#!/usr/bin/env bash
# GPT pretraining on CPU with all three kinds of parallelism at once: 4 gloo ranks laid out
# as tensor parallel 2 x pipeline parallel 2 (x data parallel 1), on the default corpus
# (this Python's standard library source, built by examples/demo.sh into build/demo/data/).
#   bash examples/pretrain_gpt_3d_cpu.sh
#   NPROC=8 bash examples/pretrain_gpt_3d_cpu.sh            # adds data parallel 2
#   bash examples/pretrain_gpt_3d_cpu.sh --use-distributed-optimizer   # extra flags pass through
# Rank order is Megatron's (TP fastest, then DP, then PP): ranks 0,1 are stage 0, ranks 2,3
# stage 1. The pipeline runs 1F1B over 4 micro-batches per step. Losses are printed by the
# last stage. Convert the checkpoints to one process with
#   .venv/bin/python tools/checkpoint_util.py --load-dir build/example_3d/checkpoints \
#       --save-dir build/example_3d/checkpoints_tp1 --target-tensor-parallel-size 1 \
#       --target-pipeline-parallel-size 1
# A rerun resumes from build/example_3d/checkpoints (rm -rf it to start over).
set -euo pipefail
cd "$(dirname "$0")/.."
source examples/_python.sh
NPROC=${NPROC:-4}
DATA=${DATA:-build/demo/data}
OUT=${OUT:-build/example_3d}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# 1. The default corpus, tokenizer and token store, as examples/demo.sh builds them
#    (skipped when they are already there).
if [ ! -s "$DATA/stdlib_text_document.idx" ] || [ ! -s "$DATA/stdlib_sp.model" ]; then
  mkdir -p "$DATA"
  "$PYTHON" tools/prepare_default_corpus.py --output "$DATA/stdlib.jsonl.part" --skip-tests \
      --max-bytes 8000000
  mv "$DATA/stdlib.jsonl.part" "$DATA/stdlib.jsonl"
  "$PYTHON" tools/train_tokenizer.py --input "$DATA/stdlib.jsonl" --model-prefix "$DATA/stdlib_sp" \
      --vocab-size 8000 --num-threads 2
  "$PYTHON" tools/preprocess_data.py --input "$DATA/stdlib.jsonl" --output-prefix "$DATA/stdlib" \
      --tokenizer-type GPTSentencePieceTokenizer --tokenizer-model "$DATA/stdlib_sp.model" \
      --append-eod --workers 2
fi

# 2. TP 2 x PP 2 on 4 local ranks (gloo). --use-cpu-initialization makes the initial
#    weights the same as a single-process run with the same seed, layout for layout.
"${TORCHRUN[@]}" --standalone --nproc_per_node "$NPROC" pretrain_gpt.py \
    --tensor-model-parallel-size 2 --pipeline-model-parallel-size 2 \
    --distributed-backend gloo --distributed-timeout-minutes 5 --use-cpu-initialization \
    --num-layers 4 --hidden-size 128 --num-attention-heads 4 \
    --seq-length 128 --max-position-embeddings 128 \
    --micro-batch-size 2 --global-batch-size 8 \
    --lr 6e-4 --min-lr 6e-5 --lr-decay-style cosine --lr-warmup-fraction 0.05 \
    --weight-decay 0.1 --clip-grad 1.0 --seed 1234 \
    --train-iters 50 --eval-interval 25 --eval-iters 2 --log-interval 5 \
    --data-path "$DATA/stdlib_text_document" --split 949,50,1 \
    --tokenizer-type GPTSentencePieceTokenizer --tokenizer-model "$DATA/stdlib_sp.model" \
    --save "$OUT/checkpoints" --load "$OUT/checkpoints" --save-interval 25 "$@"
