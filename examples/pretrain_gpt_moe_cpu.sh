#!/usr/bin/env bash
# Small CPU run of a 4-expert MoE GPT with CL_seqtru_voc + random-LTD on the default corpus:
#   bash examples/pretrain_gpt_moe_cpu.sh                 # MoE + CL_seqtru_voc + random-LTD
#   CL=none LTD=0 bash examples/pretrain_gpt_moe_cpu.sh   # the MoE baseline
# The model of examples/pretrain_gpt_cl_cpu.sh (4 layers, hidden 128) with 4 experts in
# layers 1 and 3 (--expert-interval 2, Megatron-DeepSpeed's "every other layer"), top-1,
# capacity factor 1.0; random-LTD as in examples/pretrain_gpt_random_ltd_cpu.sh (layers
# 1..2 drop tokens: the dropped ones skip the MoE layer 1, router included). TensorBoard
# shows moe/load_balancing_loss, moe/dropped_token_fraction and the per-layer histograms
# moe/expert_load/layer_N. Extra arguments go to pretrain_gpt.py.
set -euo pipefail
cd "$(dirname "$0")/.."

MOE_ARGS=(--num-experts 4 --expert-interval 2 --moe-router-topk 1 --moe-aux-loss-coeff 0.01
          --moe-train-capacity-factor 1.0 --moe-eval-capacity-factor 1.0 --moe-min-capacity 4)
LTD_ARGS=()
if [[ ${LTD:-1} == 1 ]]; then
  LTD_ARGS=(--random-ltd --random-ltd-min-seqlen 32 --random-ltd-total-steps 70
            --random-ltd-seq-per-step 16)
fi
CL=${CL:-seqtru_voc}
OUT=${OUT:-build/example_moe_$CL} CL=$CL bash examples/pretrain_gpt_cl_cpu.sh \
    "${MOE_ARGS[@]}" "${LTD_ARGS[@]}" "$@"
