"""Telemetry: per-phase timers by --timing-log-level, throughput (tokens/s, TFLOP/s per
device, MFU), memory, in the log, TensorBoard, the metrics file and W&B (offline)."""
from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import time

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from megatron import telemetry, telemetry_flags
from megatron.core.timers import STEP_TIMERS, Timers, TimerConfig
from megatron.metrics_file import read_metrics
from megatron.throughput import ModelFlops, mfu, peak_tflops, tflops_per_device
from megatron.training_log import StepStats, Telemetry, TrainingLogger
from tests.training.helpers import run_tiny

LEVEL_1, LEVEL_2 = STEP_TIMERS[1], STEP_TIMERS[2]
REPORT = "(min, max) time across ranks (ms):"


# ---------------------------------------------------------------- FLOPs, by hand

TINY = dict(num_layers=2, hidden_size=8, ffn_hidden_size=16, num_attention_heads=4,
            kv_channels=2, num_query_groups=2, vocab_size=32, swiglu=True)


def test_flops_of_a_tiny_gqa_swiglu_model_by_hand():
    """h=8, 4 heads of 2 channels (q = 8), 2 query groups (k = v = 4), SwiGLU f=16,
    V=32, 3 sequences of 5 tokens. Per layer and token, forward: projections
    2*8*(8+4+4) + 2*8*8 = 384, MLP 2*8*16*3 = 768, causal core attention 2*8*5 = 80;
    per token of the output layer 2*8*32 = 512. Forward = 15*(2*(384+768+80) + 512)
    = 44640, times 3 for the backward."""
    model = ModelFlops(**TINY)
    assert model.step_flops(rows=3, seq_length=5) == 3 * 44640
    # random-LTD: layer 1 keeps 3 of 5 tokens (9 token-rows, attention over 3); layer 0
    # and the output layer see all 15: 15*1232 + 9*(384+768+2*8*3) + 15*512 = 36960
    assert model.step_flops(3, 5, kept_length=3, dropping_layers=frozenset({1})) == 3 * 36960
    # MoE on layer 0 with top-2: its MLP runs twice per token (+15*768 forward)
    moe = ModelFlops(**TINY, moe_layers=frozenset({0}), moe_topk=2)
    assert moe.step_flops(3, 5) == 3 * (44640 + 15 * 768)
    # BERT: bidirectional attention (2 * 15 * 80 more) and the LM head's 8x8 transform
    bert = ModelFlops(**TINY, causal=False)
    assert bert.step_flops(3, 5) == 3 * (44640 + 2 * 15 * 80 + 15 * 2 * 8 * 8)


def _megatron_lm_flops(b, s, layers, h, heads, kv_channels, groups, ffn, vocab, swiglu):
    """Megatron-LM's num_floating_point_operations (training.py) for a dense GPT."""
    q, k = kv_channels * heads, kv_channels * groups
    attn = 3 * 2 * (h * (q + k + k) + q * h)
    core = 3 * 2 * q / 2 * 2
    mlp = 3 * 2 * h * ffn * (3 if swiglu else 2)
    return b * s * (mlp * layers + attn * layers + 3 * 2 * h * vocab) + b * s * s * core * layers


@pytest.mark.parametrize("swiglu,groups", [(False, 16), (True, 4)])
def test_flops_equal_megatron_lm_formula(swiglu, groups):
    from megatron.model.config import TransformerConfig
    config = TransformerConfig(num_layers=4, hidden_size=256, num_attention_heads=16,
                               padded_vocab_size=1024, max_position_embeddings=128,
                               swiglu=swiglu, num_query_groups=groups)
    model = ModelFlops.from_config(config)
    expected = _megatron_lm_flops(8, 128, 4, 256, 16, 16, groups, config.ffn_hidden_size,
                                  1024, swiglu)
    assert model.step_flops(8, 128) == expected


def test_peak_table_and_mfu():
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_tflops("NVIDIA L40S") == 362.0 and peak_tflops("NVIDIA L4") == 121.0
    assert peak_tflops(None) is None and peak_tflops("Some CPU") is None
    assert peak_tflops(None, override=50.0) == 50.0 == peak_tflops("NVIDIA H100", 50.0)
    assert tflops_per_device(8e12, 2.0, 2) == 2.0
    assert mfu(2.0, 8.0) == 0.25 and mfu(2.0, None) is None


# ---------------------------------------------------------------- the logger's fields

def test_throughput_and_memory_fields_in_line_tensorboard_and_metrics_file(tmp_path, capsys):
    """Two steps of 3e12 FLOPs and 100 tokens in 0.5 s on 2 devices: 6 TFLOP/s per
    device, 60% of a 10 TFLOP/s peak, 400 tokens/s."""
    tb, path = str(tmp_path / "tb"), str(tmp_path / "metrics.jsonl")
    logger = TrainingLogger(2, 2, tb, metrics_file=path, log_timers=False,
                            telemetry=Telemetry(world_size=2, peak_tflops=10.0,
                                                memory_to_tensorboard=True,
                                                reports_memory=True, rank=0))
    for it in (1, 2):
        logger.record(StepStats(it, 4 * it, 100 * it, 100, 1e-3, 4, 1.0, 0.5, False,
                                {"lm loss": 2.0}, flops=int(3e12)), 0.5)
    logger.close()
    out = capsys.readouterr().out
    assert (" elapsed time per iteration (ms): 250.0 | throughput per GPU (TFLOP/s/GPU): 6.0 |"
            " MFU: 60.0% | learning rate:") in out
    assert " tokens per second: 400.0 |" in out
    assert "[Rank 0] (after 2 iterations) memory (MB) | rss: " in out and "| max rss: " in out
    step = read_metrics(path).steps[2]
    assert step["tflops_per_device"] == pytest.approx(6.0)
    assert step["mfu"] == pytest.approx(0.6) and step["tokens_per_second"] == 400.0
    assert step["memory"]["rss_bytes"] > 0 and step["memory"]["max_rss_bytes"] > 0
    acc = EventAccumulator(tb)
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert acc.Scalars("throughput")[-1].value == pytest.approx(6.0)
    assert acc.Scalars("mfu")[-1].value == pytest.approx(0.6)
    assert {"mem-rss-bytes", "mem-max-rss-bytes", "tokens-per-second"} <= tags


def test_no_mfu_without_a_peak_and_no_throughput_without_flops(capsys):
    logger = TrainingLogger(2, 1, None, telemetry=Telemetry(peak_tflops=None))
    logger.record(StepStats(1, 4, 100, 100, 1e-3, 4, 1.0, 0.5, False, {}, flops=10**12), 1.0)
    logger.record(StepStats(2, 8, 200, 100, 1e-3, 4, 1.0, 0.5, False, {}), 1.0)
    first, second = capsys.readouterr().out.splitlines()
    assert "throughput per GPU (TFLOP/s/GPU): 1.0 |" in first and "MFU" not in first
    assert "throughput per GPU" not in second


# ---------------------------------------------------------------- timers

def test_timers_levels_and_report_options():
    timers = Timers(TimerConfig(log_level=1, log_option="minmax"))
    with timers.phase("forward-backward"):
        pass
    with timers.phase("forward-compute"):     # level 2: off, never created
        pass
    assert timers.names() == list(LEVEL_1)
    times = timers.gather(timers.names() + ["forward-compute"])
    assert list(times) == ["forward-backward"]
    report = timers.report(times)
    assert report.startswith(REPORT) and "    forward-backward ......" in report
    off = Timers(TimerConfig(log_level=0))
    assert off.names() == [] and off.gather(off.names()) == {}
    with off.phase("optimizer"):
        pass
    assert off.gather(["optimizer"]) == {}
    for option, head in (("max", "max time across ranks (ms):"),
                         ("all", "times across ranks (ms):")):
        t = Timers(TimerConfig(2, option))
        assert t.report({"optimizer": [1.0, 2.0]}).startswith(head)
    assert "rank  1: 2.00" in Timers(TimerConfig(2, "all")).report({"optimizer": [1.0, 2.0]})
    with pytest.raises(ValueError, match="--timing-log-level"):
        TimerConfig(3)


def _fake_cuda(monkeypatch, syncs: list | None = None) -> None:
    """torch.cuda as a process that uses a GPU would see it (allocator figures in MiB)."""
    import torch
    for name, value in (("is_available", True), ("is_initialized", True),
                        ("memory_allocated", 2**20), ("max_memory_allocated", 2 * 2**20),
                        ("memory_reserved", 3 * 2**20), ("max_memory_reserved", 4 * 2**20)):
        monkeypatch.setattr(torch.cuda, name, lambda value=value: value)
    if syncs is not None:
        monkeypatch.setattr(torch.cuda, "synchronize", lambda: syncs.append(1))


def test_gpu_memory_fields_and_report(monkeypatch):
    _fake_cuda(monkeypatch)
    memory = telemetry.memory_stats()
    assert memory == {"allocated_bytes": 2**20, "max_allocated_bytes": 2 * 2**20,
                      "reserved_bytes": 3 * 2**20, "max_reserved_bytes": 4 * 2**20}
    assert telemetry.memory_report(memory, 5, 3) == (
        "[Rank 3] (after 5 iterations) memory (MB) | allocated: 1.00 | max allocated: 2.00 "
        "| reserved: 3.00 | max reserved: 4.00")
    assert sorted(telemetry.tensorboard_memory(memory)) == [
        "mem-allocated-bytes", "mem-max-allocated-bytes", "mem-max-reserved-bytes",
        "mem-reserved-bytes"]


@pytest.mark.parametrize("level,synced", [(0, 0), (1, 4), (2, 6)])
def test_only_the_levels_asked_for_synchronise_the_device(monkeypatch, level, synced):
    """A running timer drains the GPU at start and stop; a timer above the level is a
    no-op that never does (level 0 adds no sync to the step)."""
    syncs: list = []
    _fake_cuda(monkeypatch, syncs)
    timers = Timers(TimerConfig(level, barrier_level_1=False))
    for name in ("forward-backward", "optimizer", "forward-compute"):
        with timers.phase(name):
            pass
    assert len(syncs) == synced


def _run(tmp_path, level: int, *extra: str) -> tuple[str, str]:
    tb = str(tmp_path / f"tb{level}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run_tiny("--tensorboard-dir", tb, "--timing-log-level", str(level),
                 "--log-timers-to-tensorboard", "--eval-iters", "0", *extra, iters=2)
    return out.getvalue(), tb


@pytest.mark.parametrize("level", [0, 1, 2])
def test_timer_names_in_the_log_and_tensorboard_by_level(tmp_path, level):
    out, tb = _run(tmp_path, level, "--fp16", "--loss-scale", "128",
                   "--log-memory-to-tensorboard")
    acc = EventAccumulator(tb)
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"throughput", "tokens-per-second", "iteration-time", "mem-rss-bytes"} <= tags
    timed = [n for n in LEVEL_1 + LEVEL_2 if f"    {n} ." in out]
    # the fp32 wrapper of a pure-fp32 run has no copy/unscale parts; --fp16 times them all
    # except the distributed optimizer's all-gather and the pipeline's exchanges
    expected = {0: [], 1: [n for n in LEVEL_1 if n != "params-all-gather"],
                2: [n for n in LEVEL_1 + LEVEL_2 if n != "params-all-gather"
                    and "send" not in n and "recv" not in n]}[level]
    assert timed == expected
    assert (REPORT in out) == (level > 0)
    assert sorted(t for t in tags if t.endswith("-time") and t != "iteration-time") == \
        sorted(f"{n}-time" for n in expected)
    metrics = read_metrics(os.path.join(tb, "metrics.jsonl")).steps[2]
    assert sorted(metrics["timers_ms"]) == sorted(expected)
    assert metrics["tflops_per_device"] > 0 and metrics["memory"]["rss_bytes"] > 0


def test_save_checkpoint_is_timed_at_level_0(tmp_path):
    out, _ = _run(tmp_path, 0, "--save", str(tmp_path / "ckpt"), "--save-interval", "1")
    assert out.count("    save-checkpoint .") == 2


def _pipeline_worker(rank, world_size):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run_tiny("--pipeline-model-parallel-size", "2", "--use-distributed-optimizer",
                 "--timing-log-level", "2", "--timing-log-option", "all", "--eval-iters", "0",
                 "--log-interval", "2", iters=2)
    return out.getvalue()


def two_rank_jobs(tmp_path_factory) -> dict:
    """This module's job in the session's shared 2-rank spawn (tests/conftest.py)."""
    return {"telemetry_pp2": (_pipeline_worker,)}


def test_pipeline_exchanges_and_all_gather_timed_per_rank(two_rank_spawn):
    first, last = two_rank_spawn["telemetry_pp2"]
    assert "times across ranks (ms):" in last and "times across ranks" not in first
    ranks_of: dict[str, list[int]] = {}
    for line in last[last.index("times across ranks (ms):"):].splitlines()[1:]:
        if line.startswith("     rank "):
            ranks_of[name].append(int(line.split()[1].rstrip(":")))
        elif line.startswith("  ") and line.endswith(":"):
            name = line.strip().rstrip(":")
            ranks_of[name] = []
    # 1F1B on 2 stages, 2 micro-batches: the first stage sends activations and receives
    # gradients, the last one the reverse (an exchange is timed only where it exchanges);
    # both compute and all-gather their ZeRO-1 parameters
    for name, ranks in (("forward-send", [0]), ("forward-recv", [1]), ("backward-send", [1]),
                        ("backward-recv", [0]), ("forward-send-backward-recv", [0]),
                        ("backward-send-forward-recv", [1]), ("params-all-gather", [0, 1]),
                        ("forward-compute", [0, 1]), ("backward-compute", [0, 1])):
        assert ranks_of[name] == ranks, name


# ---------------------------------------------------------------- flags and W&B

def test_flag_problems(monkeypatch):
    from megatron.arguments import parse_args
    args = parse_args(args=["--wandb-project", "p", "--log-memory-interval", "3",
                            "--log-interval", "2", "--peak-tflops", "0"])
    monkeypatch.setattr(telemetry_flags.importlib.util, "find_spec", lambda name: None)
    problems = "\n".join(telemetry_flags.telemetry_problems(args))
    assert "--wandb-project needs --wandb-exp-name" in problems
    assert "--wandb-project needs --wandb-save-dir or --save" in problems
    assert f"--wandb-project needs the wandb package: {telemetry_flags.WANDB_INSTALL}" in problems
    assert "--log-memory-interval 3 must be a positive multiple of --log-interval 2" in problems
    assert "--peak-tflops must be > 0" in problems


def _wandb_history(path: str) -> dict[int, dict[str, float]]:
    """step -> scalars of an offline run's ``run-*.wandb`` file: W&B's header, then
    LevelDB-log records (7-byte headers, 32 KiB blocks) of ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b":W&B"
    pos, pending, history = 7, b"", {}
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:     # a block's tail too short for a header: padding
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if kind == 0 or pos + 7 + length > len(data):   # the end, or a record still written
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):              # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                history[record.history.step.num] = {
                    "/".join(i.nested_key) or i.key: json.loads(i.value_json)
                    for i in record.history.item}
    return history


def test_wandb_offline_run_gets_the_tensorboard_scalars(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    save = str(tmp_path / "wandb")
    _, tb = _run(tmp_path, 1, "--wandb-project", "telemetry-test", "--wandb-exp-name", "tiny",
                 "--wandb-save-dir", save)
    runs = glob.glob(os.path.join(save, "wandb", "offline-run-*"))
    assert len(runs) == 1
    record_file = glob.glob(os.path.join(runs[0], "run-*.wandb"))[0]
    deadline = time.monotonic() + 60.0   # W&B's own process may still be flushing the file
    while sorted(history := _wandb_history(record_file)) != [1, 2] and \
            time.monotonic() < deadline:
        time.sleep(0.5)
    assert sorted(history) == [1, 2]
    acc = EventAccumulator(tb)
    acc.Reload()
    for key in ("lm loss", "learning-rate", "grad-norm", "throughput", "tokens-per-second",
                "iteration-time", "forward-backward-time", "optimizer-time"):
        assert history[2][key] == pytest.approx(acc.Scalars(key)[-1].value, rel=1e-6), key
