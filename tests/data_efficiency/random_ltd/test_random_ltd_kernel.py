"""The Triton kernels, run on CPU under Triton's interpreter, equal the reference path.

TRITON_INTERPRET=1 only takes effect if it is set before triton is imported, so the
checks (in _kernel_check.py) run in a fresh subprocess with the flag set.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

_ROOT = Path(__file__).resolve().parents[3]
_CHECK = Path(__file__).with_name("_kernel_check.py")


def test_kernels_bit_exact_under_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(_ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("MEGATRON_RANDOM_LTD_IMPL", None)
    proc = subprocess.run([sys.executable, str(_CHECK)], cwd=_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "random-LTD kernel checks passed" in proc.stdout
