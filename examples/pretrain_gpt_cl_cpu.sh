#!/usr/bin/env bash
# Small CPU run of GPT pretraining with curriculum learning (CL) on the default corpus (this
# Python's standard library source). Pick the curriculum with CL=...:
#   CL=seqtru      bash examples/pretrain_gpt_cl_cpu.sh   # truncate samples, 16 -> 128 tokens
#   CL=seqres      bash examples/pretrain_gpt_cl_cpu.sh   # reshape into more, shorter rows
#   CL=voc         bash examples/pretrain_gpt_cl_cpu.sh   # easiest 1% -> 100% by vocabulary rarity
#   CL=seqtru_voc  bash examples/pretrain_gpt_cl_cpu.sh   # both (the paper's best GPT setting)
#   CL=seqres_voc  bash examples/pretrain_gpt_cl_cpu.sh
#   CL=none        bash examples/pretrain_gpt_cl_cpu.sh   # no curriculum (a baseline)
# The voc curricula first index every training sample with the offline analyzer
# (tools/analyze_data.py, sample granularity, the same --split/--seq-length/--seed/number of
# samples as training so sample ids match). Pacing follows the paper's GPT preset: seqtru /
# seqres fixed_linear from 16 tokens (step 8), voc fixed_root (root 2) from 1%, both over
# T_c = 40% of the steps. TensorBoard shows curriculum/<metric>, seqlen/curriculum_seqlen
# and consumed-tokens. A rerun resumes from $OUT/checkpoints (rm -rf $OUT to start over).
set -euo pipefail
cd "$(dirname "$0")/.."
source examples/_python.sh
CL=${CL:-seqtru_voc}
OUT=${OUT:-build/example_cl_$CL}
DATA=${DATA:-build/example_cl_data}
mkdir -p "$DATA" "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

TRAIN_ITERS=100; GBS=8; SEQ=128; SEED=1234; SPLIT=949,50,1
CL_STEPS=40                        # T_c = 40% of the steps (paper Table 1, GPT)

# 1. Corpus, tokenizer and token store (skipped when already there).
if [ ! -f "$DATA/stdlib_text_document.idx" ]; then
  "$PYTHON" tools/prepare_default_corpus.py --output "$DATA/stdlib.jsonl" --max-files 300 --skip-tests
  "$PYTHON" tools/train_tokenizer.py --input "$DATA/stdlib.jsonl" --model-prefix "$DATA/stdlib_sp" \
      --vocab-size 4000
  "$PYTHON" tools/preprocess_data.py --input "$DATA/stdlib.jsonl" --output-prefix "$DATA/stdlib" \
      --tokenizer-type GPTSentencePieceTokenizer --tokenizer-model "$DATA/stdlib_sp.model" \
      --append-eod --workers 1
fi

# 2. The curriculum flags (see megatron/data_efficiency/config.py: one value per metric).
case "$CL" in
  none) CL_ARGS=() ;;
  seqtru|seqres)
    CL_ARGS=(--curriculum-metric "$CL" --curriculum-min-difficulty 16
             --curriculum-max-difficulty $SEQ --curriculum-schedule-type fixed_linear
             --curriculum-total-steps $CL_STEPS --curriculum-difficulty-step 8) ;;
  voc)
    CL_ARGS=(--curriculum-metric voc --curriculum-index-path "$OUT/index/voc"
             --curriculum-difficulty-type percentile --curriculum-min-difficulty 1
             --curriculum-max-difficulty 100 --curriculum-schedule-type fixed_root
             --curriculum-total-steps $CL_STEPS --curriculum-difficulty-step 1
             --curriculum-root-degree 2) ;;
  seqtru_voc|seqres_voc)
    CL_ARGS=(--curriculum-metric "${CL%_voc}" voc --curriculum-index-path "$OUT/index/voc"
             --curriculum-difficulty-type value percentile
             --curriculum-min-difficulty 16 1 --curriculum-max-difficulty $SEQ 100
             --curriculum-schedule-type fixed_linear fixed_root
             --curriculum-total-steps $CL_STEPS --curriculum-difficulty-step 8 1
             --curriculum-root-degree 1 2) ;;
  *) echo "CL must be one of none seqtru seqres voc seqtru_voc seqres_voc, got '$CL'" >&2
     exit 2 ;;
esac
[ "$CL" != none ] && CL_ARGS=(--data-efficiency-curriculum-learning "${CL_ARGS[@]}")

# 3. Offline index for the voc curricula (skipped when already there).
if [[ "$CL" == *voc* && ! -f "$OUT/index/voc/meta.json" ]]; then
  "$PYTHON" tools/analyze_data.py --data-path "$DATA/stdlib_text_document" --granularity sample \
      --split $SPLIT --seq-length $SEQ --seed $SEED --train-samples $((TRAIN_ITERS * GBS)) \
      --metrics total_vocab_freq voc --save-path "$OUT/index"
fi

# 4. Train.
"$PYTHON" pretrain_gpt.py \
    --num-layers 4 --hidden-size 128 --num-attention-heads 4 \
    --seq-length $SEQ --max-position-embeddings $SEQ \
    --micro-batch-size 4 --global-batch-size $GBS \
    --lr 6e-4 --min-lr 6e-5 --lr-decay-style cosine --lr-warmup-fraction 0.05 \
    --weight-decay 0.1 --clip-grad 1.0 --seed $SEED \
    --train-iters $TRAIN_ITERS --eval-interval 50 --eval-iters 5 --log-interval 10 \
    --data-path "$DATA/stdlib_text_document" --split $SPLIT \
    --tokenizer-type GPTSentencePieceTokenizer --tokenizer-model "$DATA/stdlib_sp.model" \
    --save "$OUT/checkpoints" --load "$OUT/checkpoints" --save-interval 50 \
    --tensorboard-dir "$OUT/tensorboard" \
    "${CL_ARGS[@]}" "$@"
