"""The metrics file (megatron/metrics_file.py): what pretrain() writes per logged step,
evaluation, start and end, where it goes by default, how a resumed run appends, and the
reading rules (a start discards what a crashed run logged past its checkpoint)."""
from __future__ import annotations

import json
import os

import pytest

from megatron.metrics_file import SCHEMA, MetricsWriter, default_path, read_metrics
from tests.training.helpers import run_tiny

CL = ["--data-efficiency-curriculum-learning", "--curriculum-metric", "seqtru",
      "--curriculum-min-difficulty", "8", "--curriculum-max-difficulty", "16",
      "--curriculum-total-steps", "4", "--curriculum-difficulty-step", "8"]


def _lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_pretrain_writes_steps_evaluations_start_and_end(tmp_path):
    tb = str(tmp_path / "tb")
    state = run_tiny("--tensorboard-dir", tb, "--log-interval", "2", *CL, iters=6)
    lines = _lines(os.path.join(tb, "metrics.jsonl"))      # the default: in --tensorboard-dir
    assert all(line["schema"] == SCHEMA and line["time"] > 0 for line in lines)
    assert [(x["event"], x["iteration"]) for x in lines] == [
        ("start", 0), ("step", 2), ("eval", 3), ("step", 4), ("step", 6), ("eval", 6),
        ("eval", 6), ("end", 6)]
    start, end = lines[0], lines[-1]
    assert start["resumed"] is False and start["train_iters"] == 6
    assert start["config"]["model"] == "gpt" and start["config"]["stop"]["iterations"] == 6
    assert start["config"]["record"]["seq_length"] == 16
    assert (end["exit"], end["consumed_tokens"]) == ("finished", state.consumed_tokens)
    steps = [x for x in lines if x["event"] == "step"]
    losses = [loss for _, loss in state.history]
    for x in steps:   # the interval's mean, as the log line prints it
        it = x["iteration"]
        assert x["interval"] == 2 and x["losses"]["lm loss"] == pytest.approx(
            sum(losses[it - 2:it]) / 2, rel=1e-6)
        assert x["iteration_time_s"] > 0 and x["skipped_iterations"] == 0
        assert x["plan"]["curriculum/seqtru"] == x["plan"]["seqlen/curriculum_seqlen"]
    # the plan of each logged step: seqtru 8 -> 16 over 4 steps in multiples of 8
    assert [x["plan"]["seqlen/curriculum_seqlen"] for x in steps] == [8, 16, 16]
    assert steps[0]["consumed_tokens"] == 2 * 4 * 8 and steps[0]["step_tokens"] == 4 * 8
    evals = [x for x in lines if x["event"] == "eval"]
    assert [x["split"] for x in evals] == ["validation", "validation", "test"]
    assert evals[1]["values"] == pytest.approx(state.last_validation)


def test_a_resumed_run_appends_and_the_reader_keeps_each_step_once(tmp_path):
    ckpt, path = str(tmp_path / "ckpt"), str(tmp_path / "m" / "metrics.jsonl")
    run_tiny("--save", ckpt, "--exit-interval", "4", "--eval-iters", "0",
             "--metrics-file", path, iters=6)
    run_tiny("--save", ckpt, "--load", ckpt, "--eval-iters", "0", "--metrics-file", path,
             iters=6)
    lines = _lines(path)
    ends = [x for x in lines if x["event"] == "end"]
    assert [(x["exit"], x["reason"]) for x in ends] == [("stopped", "--exit-interval 4"),
                                                        ("finished", "the stopping rule")]
    starts = [x for x in lines if x["event"] == "start"]
    assert [(x["iteration"], x["resumed"]) for x in starts] == [(0, False), (4, True)]
    metrics = read_metrics(path)
    assert sorted(metrics.steps) == [1, 2, 3, 4, 5, 6] and metrics.end == ends[-1]


def test_reading_rules_after_crashes(tmp_path):
    """A crashed run logged steps past its checkpoint and left half a line; the resumed
    run's start discards those steps, and its lines replace them."""
    path = str(tmp_path / "m.jsonl")
    w = MetricsWriter(path)
    w.write("start", iteration=0, consumed_samples=0, consumed_tokens=0)
    for it in range(1, 8):
        w.write("step", iteration=it, consumed_tokens=10 * it, losses={"lm loss": 9.0})
    w.write("eval", split="validation", iteration=6, values={"lm loss": 9.0})
    w.close()
    with open(path, "a") as f:
        f.write('{"schema": 1, "event": "st')                  # killed mid-write
    w = MetricsWriter(path)                                    # resumed from iteration 5
    w.write("start", iteration=5, consumed_samples=5, consumed_tokens=50)
    w.write("step", iteration=6, consumed_tokens=60, losses={"lm loss": float("nan")})
    w.close()
    m = read_metrics(path)
    assert m.skipped_lines == 1 and len(m.starts) == 2 and m.end is None
    assert sorted(m.steps) == [1, 2, 3, 4, 5, 6]               # 7 is gone: never re-run
    assert m.steps[6]["losses"] == {"lm loss": None}           # the resumed value, NaN -> null
    assert m.evals == {} and m.last()["iteration"] == 6


def test_default_path():
    """--metrics-file, else the TensorBoard folder (the run's logs); the --save folder
    holds checkpoints only."""
    assert default_path("m.jsonl", "tb") == "m.jsonl"
    assert default_path(None, "tb") == os.path.join("tb", "metrics.jsonl")
    assert default_path(None, None) is None


def test_only_the_logging_rank_writes(tmp_path):
    """Every rank builds the logger; only the logging rank (the last: it holds the loss)
    opens the file."""
    from megatron.training_log import StepStats, TrainingLogger
    path = str(tmp_path / "m.jsonl")
    for logging_rank in (False, True):
        logger = TrainingLogger(2, 1, None, is_logging_rank=logging_rank, metrics_file=path)
        logger.record(StepStats(1, 4, 64, 64, 1e-3, 4, 1.0, 0.5, False, {"lm loss": 2.0}), 0.1)
        logger.validation(1, 4, 64, {"lm loss": 2.5})
        logger.close()
        assert os.path.exists(path) == logging_rank
    assert [x["event"] for x in _lines(path)] == ["step", "eval"]
