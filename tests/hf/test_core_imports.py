"""The training path never imports the optional ecosystem packages (requirements-eval.txt):
a short pretrain() run, the checkpoint converter's Megatron-to-Megatron path and the
data tools work with transformers, safetensors, lm_eval and datasets made unimportable."""
from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
OPTIONAL = ("transformers", "safetensors", "lm_eval", "datasets", "tokenizers")

_SCRIPT = f"""
import importlib.abc, sys
BLOCKED = {OPTIONAL!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"optional package {{name}} imported by the core path")
sys.meta_path.insert(0, Block())
sys.path.insert(0, {ROOT!r})
import pretrain_gpt, pretrain_bert, megatron.training, megatron.checkpointing
from tests.training.helpers import run_tiny
state = run_tiny("--save", sys.argv[1], "--save-interval", "2", iters=2)
assert state.iteration == 2
from tests.tools.tool_loader import load_tool
load_tool("checkpoint_util").main(["--load-dir", sys.argv[1], "--save-dir", sys.argv[1] + "_tp1",
    "--target-tensor-parallel-size", "1", "--target-pipeline-parallel-size", "1"])
load_tool("preprocess_data"); load_tool("analyze_data")
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not loaded, loaded
print("CORE-OK")
"""


def test_training_path_does_not_import_optional_packages(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path / "ckpt")], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "CORE-OK" in run.stdout, run.stdout[-2000:] + run.stderr[-3000:]
