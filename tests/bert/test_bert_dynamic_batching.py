"""BERT with DeepSpeed's dynamic_batching: token-budget batches from the analyzer's seqlen
metric, the LR scaled per step, exact resume, and the refusals."""
from __future__ import annotations

import json

import numpy as np
import pytest

import pretrain_bert
from megatron.data_efficiency.analyzer.analyzer import AnalyzerConfig
from megatron.data_efficiency.analyzer.bert_samples import BertSampleParams, run_bert_analyzer
from megatron.data_efficiency.analyzer.index_io import MetricIndex
from megatron.data_efficiency.dynamic_batching.packing import pack, scaled_lr
from megatron.metrics_file import read_metrics
from megatron.optimizer_param_scheduler import build_schedule_config, lr_at
from test_pretrain_bert import _flags

ITERS, GBS, MBS, MAX_TOKENS, LR = 4, 8, 2, 64, 3e-3


@pytest.fixture(scope="module")
def seqlen_index(bert_data, tmp_path_factory) -> str:
    """The analyzer's seqlen metric of the run's training samples (its output folder)."""
    out = str(tmp_path_factory.mktemp("dynbatch") / "index")
    run_bert_analyzer(AnalyzerConfig(
        data_prefix=bert_data["data"], save_path=out, metrics=("seqlen",), granularity="sample",
        split="80,15,5", seq_length=32, seed=11, train_samples=ITERS * GBS,
        cache_dir=bert_data["dir"], progress=False), BertSampleParams())
    return out


def _config(tmp_path, index: str, **batching) -> str:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"data_efficiency": {"enabled": True, "seed": 5, "data_sampling": {
        "dynamic_batching": {"enabled": True, "max_tokens": MAX_TOKENS, "metrics_path": index,
                             "lr_scaling_method": "linear", **batching}}}}))
    return str(path)


def _run(bert_data, config: str, *extra: str, iters: int = ITERS):
    """The BERT test run with the LR scheduled on consumed tokens (no step warmup)."""
    flags = _flags(bert_data, "--micro-batch-size", str(MBS), "--log-interval", "1",
                   "--eval-iters", "0", "--lr-warmup-tokens", "100", "--lr-decay-tokens",
                   "2000", "--data-efficiency-config", config, *extra, iters=iters)
    i = flags.index("--lr-warmup-iters")
    return pretrain_bert.main(flags[:i] + flags[i + 2:])


def test_dynamic_batching_trains_bert_with_deepspeeds_batches_and_lrs(bert_data, seqlen_index,
                                                                     tmp_path, capsys):
    """The steps take pack()'s batches (checked against DeepSpeed's own function in
    tests/data_efficiency/compat/test_deepspeed_dynamic_batching.py): samples, real tokens
    and the LR of the consumed-token schedule scaled by samples / global batch."""
    config = _config(tmp_path, seqlen_index, sequence_picking_order="random", verbose=True)
    metrics = str(tmp_path / "metrics.jsonl")
    state = _run(bert_data, config, "--metrics-file", metrics)
    out = capsys.readouterr().out
    seqlens = np.asarray(MetricIndex.open(seqlen_index + "/seqlen").sample_to_metric)
    plan = pack(seqlens, MAX_TOKENS, GBS, order="random", seed=5)
    sizes = plan.batch_sizes()
    assert len(set(sizes[:ITERS])) > 1, sizes                 # batches of varying samples
    steps = read_metrics(metrics).steps
    k = np.arange(ITERS) % plan.num_batches
    assert [steps[i + 1]["global_batch_size"] for i in range(ITERS)] == [sizes[j] for j in k]
    assert [steps[i + 1]["step_tokens"] for i in range(ITERS)] == \
        [plan.batch_tokens(j) for j in k]
    assert state.consumed_samples == sum(sizes[j] for j in k)
    assert state.consumed_tokens == sum(plan.batch_tokens(j) for j in k)
    schedule = build_schedule_config(LR, 3e-4, "cosine", (100, "tokens"), (2000, "tokens"),
                                     GBS, 32)
    for i in range(ITERS):   # logged: the LR of the next step, scaled to its batch
        base = lr_at(steps[i + 1]["consumed_tokens"], schedule)
        expected = scaled_lr(base, GBS, sizes[(i + 1) % plan.num_batches], "linear")
        assert steps[i + 1]["learning_rate"] == pytest.approx(expected, rel=1e-12), i
        assert steps[i + 1]["plan"]["batching/samples"] == sizes[i % plan.num_batches]
    assert f"batch 0: {sizes[0]} samples" in out               # verbose: every batch printed


def test_resume_is_exact(bert_data, seqlen_index, tmp_path):
    """4 steps straight == 2 steps, save, a new run with --load, 2 more: the packing's
    position comes back from the checkpoint and the batches and losses are the same."""
    config = _config(tmp_path, seqlen_index, sequence_picking_order="seqlen")
    straight = _run(bert_data, config)
    ckpt = str(tmp_path / "ckpt")
    first = _run(bert_data, config, "--save", ckpt, "--exit-interval", "2")
    resumed = _run(bert_data, config, "--load", ckpt)
    assert (first.iteration, resumed.iteration) == (2, ITERS)
    assert first.history + resumed.history == straight.history
    assert (resumed.consumed_samples, resumed.consumed_tokens) == \
        (straight.consumed_samples, straight.consumed_tokens)
    other = _config(tmp_path, seqlen_index, sequence_picking_order="random")
    with pytest.raises(ValueError, match="packing .* differs from this run's"):
        _run(bert_data, other, "--load", ckpt)
