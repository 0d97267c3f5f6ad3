#!/usr/bin/env bash
# GPU checks of the hot path, one script, meant to finish in under 8 minutes on one GPU:
#   1. the Triton random-LTD kernels compiled for CUDA against the PyTorch path
#      (fp32 and bf16, sequence lengths 1024..8192): bit-exactness and time ratios;
#   2. a bf16 training step of a GPT-2 350M-size model (24 layers, hidden 1024, 16 heads,
#      seq 1024, vocab 50304, micro-batch 8) and its MFU against the GPU's bf16 matmul
#      peak measured in the same run (benchmarks/train_throughput.py);
#   3. random-LTD step-time ratios at kept 1/4, 1/2, 3/4 of the same model size at seq 2048,
#      against its own no-dropping step, beside the FLOPs-kept ideal.
#
# Usage: bash benchmarks/gpu_check.sh            # on a machine with a CUDA GPU
#        bash benchmarks/gpu_check.sh --smoke    # tiny sizes on CPU: checks the script only
# PYTHON selects the interpreter (default: .venv/bin/python if present, else python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
SMOKE=${1:-}

if [ "$SMOKE" = "--smoke" ]; then
    export TRITON_INTERPRET=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    "$PY" benchmarks/gpu_check.py kernels --smoke
    "$PY" benchmarks/train_throughput.py --device cpu --num-layers 2 --hidden-size 64 \
        --num-attention-heads 2 --seq-length 64 --vocab-size 512 --micro-batch-size 2 \
        --steps 1 --matmul-size 256
    "$PY" benchmarks/gpu_check.py ltd --smoke --num-layers 4 --hidden-size 64 \
        --num-attention-heads 2 --seq-length 64 --vocab-size 512 --micro-batch-size 2 --steps 1
    exit 0
fi

"$PY" - <<'PYEOF'
import torch, triton
assert torch.cuda.is_available(), "gpu_check.sh needs a CUDA GPU (--smoke checks the script on CPU)"
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), triton {triton.__version__}, "
      f"{torch.cuda.get_device_name()}")
PYEOF
echo "== 1. Triton kernels vs PyTorch path"
timeout 150 "$PY" benchmarks/gpu_check.py kernels
echo "== 2. bf16 training step, GPT-2 350M size, MFU against the measured bf16 matmul peak"
timeout 150 "$PY" benchmarks/train_throughput.py --device cuda --bf16 --num-layers 24 \
    --hidden-size 1024 --num-attention-heads 16 --seq-length 1024 --vocab-size 50304 \
    --micro-batch-size 8 --steps 10 --matmul-size 8192
echo "== 3. random-LTD step-time ratios (kept 1/4, 1/2, 3/4)"
timeout 150 "$PY" benchmarks/gpu_check.py ltd --num-layers 24 --hidden-size 1024 \
    --num-attention-heads 16 --seq-length 2048 --vocab-size 50304 --micro-batch-size 4 --steps 5
