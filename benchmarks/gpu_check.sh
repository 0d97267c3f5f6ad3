#!/usr/bin/env bash
# The acceptance check for the first GPU (issue 20): one script, one JSON report and a
# summary table, under 8 minutes on one NVIDIA GPU (the parts' time limits add up to 7.75):
#   (a) pretrain_gpt.py in bf16 with CL_seqtru_voc + random-LTD + the distributed optimizer,
#       200 steps of the gpu-smoke GPT, and the same run in fp32 on the CPU for its first
#       20 steps, losses compared;
#   (b) the Triton random-LTD kernels against the PyTorch path, bit-exact, and their times;
#   (c) MFU of a 350M-class bf16 step against the GPU's spec peak and a measured matmul peak;
#   (d) random-LTD step time against the FLOP ideal at kept 1/4, 1/2, 3/4;
#   (e) memory against the ZeRO-1 formula and an estimate;
#   (f) the gpu-smoke study preset: baseline 100%, CL_seqtru_voc+random-LTD 50%, baseline 50%.
#
# Usage: bash benchmarks/gpu_check.sh [--out DIR]            # on a machine with a CUDA GPU
#        bash benchmarks/gpu_check.sh --smoke [--out DIR]    # the same code on the CPU, tiny
# Python: $PYTHON if set, else .venv/bin/python when it imports torch, else python3. It
# must have a CUDA build of torch >= 2.11 (the script never replaces it); other missing
# packages are installed with pip from requirements.txt (torch and triton left alone), and
# a part whose package cannot be installed is reported as skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
SMOKE=""; OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE="--smoke" ;;
        --out) OUT="$2"; shift ;;
        *) echo "error: unknown argument $1 (use --smoke, --out DIR)" >&2; exit 2 ;;
    esac
    shift
done
OUT=${OUT:-build/gpu_check${SMOKE:+_smoke}}
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then PY=.venv/bin/python
else PY=python3; fi

"$PY" - "$SMOKE" <<'PYEOF' || exit 2
import sys
try:
    import torch
except ImportError:
    sys.exit("error: no torch in this Python; on a CUDA machine: pip install torch==2.13.0")
major, minor = (int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
if (major, minor) < (2, 11):
    sys.exit(f"error: torch {torch.__version__} is older than 2.11")
if sys.argv[1] != "--smoke" and not torch.cuda.is_available():
    sys.exit(f"error: torch {torch.__version__} sees no CUDA GPU (CUDA build: "
             f"{torch.version.cuda}); --smoke runs the CPU parts")
print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda})"
      + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", CPU only"))
PYEOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
    --format=csv,noheader

# The project's other dependencies, one by one (one that fails to install does not stop
# the others), without touching the machine's torch / triton.
if ! "$PY" -c "import numpy, sentencepiece, regex, tensorboard, matplotlib, tqdm" 2>/dev/null; then
    for pkg in $(grep -v -E '^\s*(#|$)|^(torch|triton)\b' requirements.txt | sort -u); do
        "$PY" -m pip install --disable-pip-version-check -q "$pkg" \
            || echo "pip could not install $pkg (offline?): the parts that need it are skipped"
    done
fi
exec "$PY" benchmarks/gpu_check.py $SMOKE --out "$OUT"
