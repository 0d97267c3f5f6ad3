#!/usr/bin/env bash
# GPT-3 1.3B pretraining with the paper's best data-efficiency recipe: CL_seqtru_voc +
# random-LTD, LR schedule on consumed tokens (Li et al., AAAI 2024, Table 1 presets).
#
#   DATA=/data/pile/pile_text_document VOCAB=gpt2-vocab.json MERGES=gpt2-merges.txt \
#   NNODES=8 NODE_RANK=0 MASTER_ADDR=host0 bash examples/pretrain_gpt_1.3B_cl_ltd.sh
#
# The paper's GPT-3 1.3B runs used 64 GPUs and 300B tokens for the baseline; with this
# recipe the baseline quality was reached with 50% of the data (TOKENS_FRACTION=0.5).
# Steps:
#   1. the token store: tools/preprocess_data.py --append-eod (GPT-2 BPE) -> $DATA.bin/.idx
#   2. the voc index of every training sample (once; MPI, CPU only) -> $INDEX/voc
#   3. pretraining with torchrun on every node
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:?set DATA to the token store prefix (without .bin/.idx)}
VOCAB=${VOCAB:?set VOCAB to gpt2-vocab.json}
MERGES=${MERGES:?set MERGES to gpt2-merges.txt}
INDEX=${INDEX:-$DATA.analysis}
OUT=${OUT:-runs/gpt_1.3B_cl_ltd}
NNODES=${NNODES:-8}; GPUS_PER_NODE=${GPUS_PER_NODE:-8}; NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-localhost}; MASTER_PORT=${MASTER_PORT:-6000}
TOKENS_FRACTION=${TOKENS_FRACTION:-0.5}      # 1.0 = the 300B-token baseline budget
ANALYZER_RANKS=${ANALYZER_RANKS:-32}

SEQ=2048; GBS=512; MBS=${MBS:-4}; SEED=1234; SPLIT=949,50,1
BASE_TOKENS=300000000000
TRAIN_TOKENS=$(python3 -c "print(int($BASE_TOKENS * $TOKENS_FRACTION))")
# Steps the nominal batch would take; curriculum and random-LTD steps consume fewer tokens,
# so pretrain() extends the run until --train-tokens are consumed.
NOMINAL_STEPS=$(( TRAIN_TOKENS / (GBS * SEQ) ))
CL_STEPS=$(( NOMINAL_STEPS * 40 / 100 ))     # T_c = 40% (GPT-3 pretraining preset)
LTD_STEPS=$(( NOMINAL_STEPS * 70 / 100 ))    # T_r = 70%

# 2. Offline index of the training samples: the same --split/--seq-length/--seed as training
#    and the number of samples the run builds, so the sample ids (and the fingerprint) match.
#    Training sizes its dataset for the steps the schedule needs to consume --train-tokens
#    (more than NOMINAL_STEPS); it prints that count at start, and if the index was built
#    for other sample maps it stops with the exact analyzer command to run. TRAIN_SAMPLES
#    overrides the estimate below.
TRAIN_SAMPLES=${TRAIN_SAMPLES:-$(( NOMINAL_STEPS * GBS ))}
if [[ ! -f $INDEX/voc/meta.json && $NODE_RANK == 0 ]]; then
  mpiexec -n "$ANALYZER_RANKS" python tools/analyze_data.py --data-path "$DATA" \
      --granularity sample --split $SPLIT --seq-length $SEQ --seed $SEED \
      --train-samples "$TRAIN_SAMPLES" --metrics total_vocab_freq voc --save-path "$INDEX"
fi

# 3. Train.
torchrun --nnodes "$NNODES" --nproc_per_node "$GPUS_PER_NODE" --node_rank "$NODE_RANK" \
    --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" pretrain_gpt.py \
    --num-layers 24 --hidden-size 2048 --num-attention-heads 16 \
    --seq-length $SEQ --max-position-embeddings $SEQ \
    --micro-batch-size $MBS --global-batch-size $GBS \
    --tensor-model-parallel-size 1 --pipeline-model-parallel-size 1 \
    --use-distributed-optimizer --bf16 \
    --train-tokens "$TRAIN_TOKENS" \
    --lr 2.0e-4 --min-lr 1.0e-6 --lr-decay-style cosine \
    --lr-warmup-tokens 375000000 --lr-decay-tokens "$TRAIN_TOKENS" \
    --weight-decay 0.1 --clip-grad 1.0 --adam-beta1 0.9 --adam-beta2 0.95 \
    --init-method-std 0.013 --hidden-dropout 0.1 --attention-dropout 0.1 --seed $SEED \
    --data-path "$DATA" --split $SPLIT --tokenizer-type GPT2BPETokenizer \
    --vocab-file "$VOCAB" --merge-file "$MERGES" --data-cache-path "$OUT/cache" \
    --data-efficiency-curriculum-learning --curriculum-metric seqtru voc \
    --curriculum-index-path - "$INDEX/voc" --curriculum-difficulty-type value percentile \
    --curriculum-min-difficulty 80 1 --curriculum-max-difficulty $SEQ 100 \
    --curriculum-schedule-type fixed_linear fixed_root --curriculum-total-steps $CL_STEPS \
    --curriculum-difficulty-step 8 1 --curriculum-root-degree 1 2 \
    --random-ltd --random-ltd-min-seqlen 128 --random-ltd-total-steps $LTD_STEPS \
    --random-ltd-seq-per-step 16 \
    --log-interval 10 --eval-interval 1000 --eval-iters 10 \
    --save "$OUT/checkpoints" --load "$OUT/checkpoints" --save-interval 2000 \
    --tensorboard-dir "$OUT/tensorboard" "$@"
