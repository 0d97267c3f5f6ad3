#!/usr/bin/env bash
# `make demo`: the data-efficiency claim in one command, on CPU. The study runner
# (tools/data_efficiency_study.py --preset demo) builds the default corpus (this Python's
# standard library), a SentencePiece tokenizer, the token store and the analyzer index, then
# pretrains the same small GPT twice, sized in tokens:
#   baseline                  at 100% of the token budget,
#   CL_seqtru_voc+random-LTD  at 50% of it (the paper's Table 1 settings scaled to the run),
# evaluates both on the whole validation split, and prints the validation losses, tokens and
# training times side by side. Outputs under build/demo/: study.md, study.json,
# loss_vs_tokens.png, loss_vs_time.png, runs/<run>/train.log, tensorboard/<run>.
# Rerunning skips finished steps and runs; an interrupted run resumes from its checkpoint
# (`make clean-demo` starts over). Extra arguments go to the study tool, e.g.
#   bash examples/demo.sh --seeds 2
set -euo pipefail
cd "$(dirname "$0")/.."

source examples/_python.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
start=$(date +%s)
"$PYTHON" tools/data_efficiency_study.py --preset demo --out build/demo "$@"
echo "demo done in $(( $(date +%s) - start ))s; plot: build/demo/loss_vs_tokens.png;" \
     "TensorBoard: tensorboard --logdir build/demo/tensorboard"
