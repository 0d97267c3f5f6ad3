"""Reading a run back from its metrics file, and the study's table and plots."""
from __future__ import annotations

import json
import math
import os

import pytest

from megatron.study import results


def _write_events(path, steps, loss_at, resumed_from=None, time_per_step=0.5):
    """Lines as pretrain writes them (megatron.metrics_file, --log-interval 1, an
    evaluation every 4 steps); a resumed run appends a ``start`` at its checkpoint's
    iteration and repeats the steps after it with other values."""
    from megatron.training_log import StepStats, TrainingLogger
    logger = TrainingLogger(max(steps), 1, None, metrics_file=path)
    first = steps[0] - 1
    logger.start(iteration=first, consumed_samples=first, consumed_tokens=first * 100,
                 resumed=first > 0, train_iters=12, config={})
    for it in steps:
        logger.record(StepStats(it, it, it * 100, 100, 1e-3, 1, 1.0, 0.5, False,
                                {"lm loss": 1.0}), time_per_step)
        if it % 4 == 0:
            logger.validation(it, it, it * 100, {"lm loss": loss_at(it),
                                                 "lm accuracy": 0.01 * it})
    logger.close()


def test_run_record_takes_the_resumed_values(tmp_path):
    tb = str(tmp_path / "metrics.jsonl")
    _write_events(tb, range(1, 11), lambda it: 9.0)               # killed after step 10
    _write_events(tb, range(9, 13), lambda it: 5.0 - 0.1 * it,    # resumed from step 8
                  time_per_step=1.0)
    r = results.run_record(tb)
    assert r["iterations"] == 12 and r["consumed_tokens"] == 1200
    assert r["val_loss"] == pytest.approx(3.8) and r["val_ppl"] == pytest.approx(math.exp(3.8))
    assert r["val_accuracy"] == pytest.approx(0.12)
    assert r["train_seconds"] == pytest.approx(8 * 0.5 + 4 * 1.0)
    assert [(p["iteration"], p["tokens"]) for p in r["curve"]] == [(4, 400), (8, 800),
                                                                   (12, 1200)]
    assert r["curve"][1]["loss"] == pytest.approx(9.0) and r["curve"][1]["seconds"] == 4.0


def test_run_record_without_validation_is_an_error(tmp_path):
    _write_events(str(tmp_path / "metrics.jsonl"), range(1, 4), lambda it: 1.0)
    with pytest.raises(ValueError, match="no 'lm loss validation'"):
        results.run_record(str(tmp_path / "metrics.jsonl"))


def _record(arm, f, seed, loss, tokens, seconds):
    return {"arm": arm, "budget_fraction": f, "seed": seed, "consumed_tokens": tokens,
            "train_seconds": seconds, "val_loss": loss, "val_ppl": math.exp(loss),
            "val_accuracy": 0.3, "curve": [{"tokens": tokens, "seconds": seconds,
                                            "loss": loss, "iteration": 10}]}


def test_table_ratios_and_spread_over_seeds(tmp_path):
    recs = [_record("baseline", 1.0, 1, 3.0, 1000, 10.0), _record("baseline", 1.0, 2, 3.2, 1000, 12.0),
            _record("random-LTD", 0.5, 1, 3.3, 500, 4.0), _record("random-LTD", 0.5, 2, 3.3, 500, 7.0)]
    table = results.study_table(recs, "t")
    base, ltd = [line for line in table.splitlines() if line.startswith("| baseline")
                 or line.startswith("| random-LTD")]
    assert "| 100% | 1,000 | 1.00x | 11.0 | 1.00x | 3.1000 ± 0.1414 |" in base
    assert "| 50% | 500 | 0.50x | 5.5 | 0.50x | 3.3000 ± 0.0000 |" in ltd
    ppl_ratio = math.exp(3.3) / ((math.exp(3.0) + math.exp(3.2)) / 2)
    assert f"{ppl_ratio:.3f}x |" in ltd
    paths = results.write_outputs(recs, {"preset": "x"}, str(tmp_path), "t")
    assert all(os.path.getsize(p) > 0 for p in paths)
    runs = json.load(open(tmp_path / "study.json"))["runs"]
    assert len(runs) == 4 and "curve" not in runs[0]
    with open(tmp_path / "loss_vs_tokens.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_the_index_a_run_asks_for_is_read_from_its_end_line(tmp_path):
    """A run that refused its index (IndexMismatchError) names the samples to index in its
    metrics file's end line; any other failure asks for nothing."""
    from megatron.data_efficiency.data_family import IndexMismatchError
    from megatron.metrics_file import MetricsWriter, exit_fields
    from megatron.study.runner import _index_samples_needed
    path = str(tmp_path / "metrics.jsonl")
    assert _index_samples_needed(path) is None                    # never started
    w = MetricsWriter(path)
    w.write("start", iteration=0)
    w.write("end", iteration=0, **exit_fields(IndexMismatchError(
        "any wording", {"train_samples": 96, "analyzer_command": "python tools/..."})))
    w.close()
    assert _index_samples_needed(path) == 96
    w = MetricsWriter(path)                                       # the rerun failed otherwise
    w.write("start", iteration=0)
    w.write("end", iteration=0, **exit_fields(ValueError("train_samples 96")))
    w.close()
    assert _index_samples_needed(path) is None
