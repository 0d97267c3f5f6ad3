#!/usr/bin/env bash
# Small CPU run of GPT pretraining with random layerwise token dropping (random-LTD) on the
# default corpus (this Python's standard library source):
#   bash examples/pretrain_gpt_random_ltd_cpu.sh                 # random-LTD alone
#   CL=seqtru_voc bash examples/pretrain_gpt_random_ltd_cpu.sh   # + curriculum (paper's best)
# The curriculum recipe (examples/pretrain_gpt_cl_cpu.sh) builds the data and, for the voc
# curricula, the analyzer index; random-LTD rides along with its flags.
# Layers 1..2 of 4 (all but the first and the last) keep 32 of the 128 tokens at step 0,
# growing by multiples of 16 to all 128 at step 70 (T_r = 70% of the steps, the paper's GPT
# preset). The LR schedule counts layer-weighted consumed tokens; TensorBoard shows the kept
# length as seqlen/random_ltd_reserved_length. Extra arguments go to pretrain_gpt.py.
set -euo pipefail
cd "$(dirname "$0")/.."

LTD_ARGS=(--random-ltd --random-ltd-min-seqlen 32 --random-ltd-total-steps 70
          --random-ltd-seq-per-step 16)

CL=${CL:-none}
OUT=${OUT:-build/example_random_ltd_$CL} CL=$CL bash examples/pretrain_gpt_cl_cpu.sh "${LTD_ARGS[@]}" "$@"
