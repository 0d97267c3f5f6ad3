"""examples/pretrain_gpt_1.3B_cl_ltd.sh runs first time: DRY_RUN=1 runs the whole recipe
(corpus, tokenizer, token store, analyzer, training with CL_seqtru_voc + random-LTD) on
CPU, and the analyzer sizes its index with training's own function, from the same flags."""
from __future__ import annotations

import os
import re
import subprocess

from megatron.arguments import parse_args, validate_args
from megatron.run_plan import plan_run
from tests.examples.no_python import no_python_env
from tests.tools.tool_loader import ROOT, load_tool

SIZING = ["--num-layers", "4", "--global-batch-size", "8", "--train-tokens", "40000",
          "--data-efficiency-curriculum-learning", "--curriculum-metric", "seqtru", "voc",
          "--curriculum-index-path", "-", "/not/yet/voc", "--curriculum-difficulty-type",
          "value", "percentile", "--curriculum-min-difficulty", "8", "1",
          "--curriculum-max-difficulty", "128", "100", "--curriculum-schedule-type",
          "fixed_linear", "fixed_root", "--curriculum-total-steps", "20",
          "--curriculum-difficulty-step", "8", "1", "--curriculum-root-degree", "1", "2",
          "--random-ltd", "--random-ltd-min-seqlen", "16", "--random-ltd-total-steps", "30",
          "--random-ltd-seq-per-step", "16"]


def test_analyzer_takes_the_training_sizing_flags():
    analyzer = load_tool("analyze_data")
    args = analyzer.parse_args(["--data-path", "corpus", "--save-path", "out", "--granularity",
                                "sample", "--split", "949,50,1", "--seq-length", "128",
                                "--metrics", "voc", "--quiet", *SIZING])
    training = validate_args(parse_args(args=[
        *SIZING, "--hidden-size", "64", "--num-attention-heads", "4", "--seq-length", "128",
        "--max-position-embeddings", "128", "--micro-batch-size", "4", "--lr", "4e-4",
        "--data-path", "corpus", "--split", "949,50,1"]))
    plan = plan_run(training)
    nominal = training.train_iters
    assert plan.train_iters > nominal          # CL and random-LTD steps consume fewer tokens
    assert training.train_iters == nominal     # plan_run does not write args
    assert args.train_samples == plan.train_valid_test_num_samples[0] == plan.train_iters * 8
    assert args.metrics == ["voc"]             # the analyzer's own flags are still its own


def test_dry_run_runs_the_whole_recipe_on_cpu(tmp_path):
    out = tmp_path / "dry"
    proc = subprocess.run(["bash", os.path.join(ROOT, "examples", "pretrain_gpt_1.3B_cl_ltd.sh")],
                          capture_output=True, text=True, timeout=600,
                          env=no_python_env(str(tmp_path), DRY_RUN="1", OUT=str(out),
                                            OMP_NUM_THREADS="1"))   # finds .venv itself
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    steps = re.search(r"\[analyzer\] the training run takes (\d+) steps", log).group(1)
    assert f"validation loss at iteration {steps} " in log          # trained to the end
    assert (out / "analysis" / "voc" / "meta.json").is_file()
    assert re.search(r"lm loss: \d", log) and "learning rate: 3.9" in log   # 4e-4 at 0.5
