"""The flagship recipe's analyzer sizes its index with training's own function, from the
same flags. (Its DRY_RUN=1, the whole recipe on CPU, runs as the README shows it, with no
python on PATH: tests/test_readme.py.)"""
from __future__ import annotations

from megatron.arguments import parse_args, run_config_from_args, validate_args
from megatron.run_plan import plan_run
from tests.tools.tool_loader import load_tool

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
    before = dict(vars(training))
    config = run_config_from_args(training)
    plan = plan_run(config)
    nominal = plan.nominal_train_iters
    assert plan.train_iters > nominal          # CL and random-LTD steps consume fewer tokens
    assert vars(training) == before and config == run_config_from_args(training)
    assert args.train_samples == plan.train_valid_test_num_samples[0] == plan.train_iters * 8
    assert args.metrics == ["voc"]             # the analyzer's own flags are still its own
