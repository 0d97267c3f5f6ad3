#!/usr/bin/env bash
# GPT-3 MoE pretraining with CL_seqtru_voc + random-LTD (Li et al., AAAI 2024, Table 2,
# cases 16-17): a 350M-size dense backbone (24 layers, hidden 1024, 16 heads) with 64
# experts in every other layer, top-1 gating (about 6.7B parameters), the curriculum and
# random-LTD from the Table 1 GPT presets, LR schedule on consumed tokens.
#
#   DATA=/data/pile/pile_text_document VOCAB=gpt2-vocab.json MERGES=gpt2-merges.txt \
#   NNODES=8 NODE_RANK=0 MASTER_ADDR=host0 bash examples/pretrain_gpt_moe_cl_ltd.sh
#   ARM=baseline ... bash examples/pretrain_gpt_moe_cl_ltd.sh      # the MoE baseline
#
# Experts are split over EP data-parallel ranks (--expert-model-parallel-size); the
# expert weights are saved per expert-parallel rank (mp_rank_00_EEE) and
# tools/checkpoint_util.py --target-expert-parallel-size converts between EP sizes.
# The MoE learning rates and capacity settings follow Megatron-DeepSpeed's GPT MoE
# examples (lower LR than the dense model; capacity factor 1.0, min capacity 4,
# load-balancing loss coefficient 0.01).
set -euo pipefail
cd "$(dirname "$0")/.."
source examples/_python.sh

DATA=${DATA:?set DATA to the token store prefix (without .bin/.idx)}
VOCAB=${VOCAB:?set VOCAB to gpt2-vocab.json}
MERGES=${MERGES:?set MERGES to gpt2-merges.txt}
ARM=${ARM:-cl_ltd}                              # cl_ltd | baseline
INDEX=${INDEX:-$DATA.analysis}
OUT=${OUT:-runs/gpt_moe64_$ARM}
NNODES=${NNODES:-8}; GPUS_PER_NODE=${GPUS_PER_NODE:-8}; NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-localhost}; MASTER_PORT=${MASTER_PORT:-6000}
EP=${EP:-64}                                    # one expert per rank on 64 GPUs
ANALYZER_RANKS=${ANALYZER_RANKS:-32}

SEQ=2048; GBS=256; MBS=${MBS:-4}; SEED=1234; SPLIT=949,50,1
TRAIN_TOKENS=${TRAIN_TOKENS:-300000000000}
NOMINAL_STEPS=$(( TRAIN_TOKENS / (GBS * SEQ) ))
CL_STEPS=$(( NOMINAL_STEPS * 40 / 100 ))        # T_c = 40% (GPT-3 pretraining preset)
LTD_STEPS=$(( NOMINAL_STEPS * 70 / 100 ))       # T_r = 70%

DE_ARGS=()
if [[ $ARM == cl_ltd ]]; then
  TRAIN_SAMPLES=${TRAIN_SAMPLES:-$(( NOMINAL_STEPS * GBS ))}
  if [[ ! -f $INDEX/voc/meta.json && $NODE_RANK == 0 ]]; then
    "$MPIEXEC" -n "$ANALYZER_RANKS" "$PYTHON" tools/analyze_data.py --data-path "$DATA" \
        --granularity sample --split $SPLIT --seq-length $SEQ --seed $SEED \
        --train-samples "$TRAIN_SAMPLES" --metrics total_vocab_freq voc --save-path "$INDEX"
  fi
  DE_ARGS=(--data-efficiency-curriculum-learning --curriculum-metric seqtru voc
    --curriculum-index-path - "$INDEX/voc" --curriculum-difficulty-type value percentile
    --curriculum-min-difficulty 80 1 --curriculum-max-difficulty $SEQ 100
    --curriculum-schedule-type fixed_linear fixed_root --curriculum-total-steps $CL_STEPS
    --curriculum-difficulty-step 8 1 --curriculum-root-degree 1 2
    --random-ltd --random-ltd-min-seqlen 128 --random-ltd-total-steps $LTD_STEPS
    --random-ltd-seq-per-step 16)
elif [[ $ARM != baseline ]]; then
  echo "ARM must be cl_ltd or baseline, got '$ARM'" >&2; exit 2
fi

"${TORCHRUN[@]}" --nnodes "$NNODES" --nproc_per_node "$GPUS_PER_NODE" --node_rank "$NODE_RANK" \
    --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" pretrain_gpt.py \
    --num-layers 24 --hidden-size 1024 --num-attention-heads 16 \
    --seq-length $SEQ --max-position-embeddings $SEQ \
    --micro-batch-size $MBS --global-batch-size $GBS \
    --num-experts 64 --expert-interval 2 --moe-router-topk 1 \
    --expert-model-parallel-size "$EP" --moe-aux-loss-coeff 0.01 \
    --moe-train-capacity-factor 1.0 --moe-eval-capacity-factor 1.0 --moe-min-capacity 4 \
    --bf16 --train-tokens "$TRAIN_TOKENS" \
    --lr 2.0e-4 --min-lr 2.0e-6 --lr-decay-style cosine \
    --lr-warmup-tokens 375000000 --lr-decay-tokens "$TRAIN_TOKENS" \
    --weight-decay 0.1 --clip-grad 1.0 --adam-beta1 0.9 --adam-beta2 0.95 \
    --init-method-std 0.014 --hidden-dropout 0.1 --attention-dropout 0.1 --seed $SEED \
    --data-path "$DATA" --split $SPLIT --tokenizer-type GPT2BPETokenizer \
    --vocab-file "$VOCAB" --merge-file "$MERGES" --data-cache-path "$OUT/cache" \
    "${DE_ARGS[@]}" \
    --log-interval 10 --eval-interval 1000 --eval-iters 10 \
    --save "$OUT/checkpoints" --load "$OUT/checkpoints" --save-interval 2000 \
    --tensorboard-dir "$OUT/tensorboard" "$@"
