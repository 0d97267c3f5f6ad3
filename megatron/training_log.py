"""The training log line, the validation line, the TensorBoard scalars (Megatron's names,
plus Megatron-DeepSpeed's ``... vs tokens`` curves with consumed tokens as x), the
optional Weights & Biases run (the iteration-keyed scalars) and the metrics file
(``megatron.metrics_file``: the same numbers as JSON lines, for programs). Each log
step's numbers are computed once and then printed, written to TensorBoard / W&B and
written to the metrics file, so what a program reads never depends on the wording of the
printed line. The telemetry (``Telemetry``): the per-phase timers' report under the
line, throughput (tokens/s, TFLOP/s per device, MFU) in it, and memory."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from megatron.core.timers import NO_TIMERS, Timers, max_across_ranks
from megatron.metrics_file import MetricsWriter
from megatron.telemetry import memory_report, memory_stats, tensorboard_memory
from megatron.throughput import mfu, tflops_per_device


@dataclass
class StepStats:
    """What one optimizer step reports to the logger."""
    iteration: int
    consumed_samples: int
    consumed_tokens: int
    step_tokens: int
    learning_rate: float
    batch_size: int
    loss_scale: float
    grad_norm: float | None
    skipped: bool
    losses: dict[str, float] = field(default_factory=dict)   # empty off the last stage
    # the step plan's TensorBoard values (curriculum/*, seqlen/*; tensors: histograms)
    extra_scalars: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, float] = field(default_factory=dict)   # the step plan's scalars()
    flops: int | None = None   # model FLOPs of the step (megatron.throughput); None: unknown


@dataclass
class Telemetry:
    """What the logger reports beyond losses (``megatron.telemetry``'s flags).

    Attributes:
        timers: the run's timers; their report follows each log line.
        world_size: devices sharing the step's FLOPs (TFLOP/s per device).
        peak_tflops: per-device peak for the MFU field (None: no MFU).
        memory_to_tensorboard: ``--log-memory-to-tensorboard``.
        memory_interval: ``--log-memory-interval`` (the report also follows the first
            log line of the process).
        reports_memory: this rank prints the memory report (data-parallel rank 0 of each
            model-parallel rank, as Megatron).
        rank: this rank (labels the memory report).
        wandb: a ``telemetry.WandbWriter`` (None: no W&B), on the logging rank.
    """
    timers: Timers = NO_TIMERS
    world_size: int = 1
    peak_tflops: float | None = None
    memory_to_tensorboard: bool = False
    memory_interval: int | None = None
    reports_memory: bool = False
    rank: int = 0
    wandb: Any = None


class TrainingLogger:
    """Accumulates losses between log lines, prints them, writes TensorBoard.

    Args:
        train_iters: the ``M`` of ``iteration N/ M``.
        log_interval: print every this many iterations.
        tensorboard_dir: where event files go (None: no TensorBoard).
        tensorboard_log_interval: write per-step scalars every this many iterations.
        is_logging_rank: the last rank prints and writes (it holds the loss).
        log_batch_size: write ``batch-size`` (``--log-batch-size-to-tensorboard``).
        log_validation_ppl: write ``<key> validation ppl``
            (``--log-validation-ppl-to-tensorboard``).
        log_timers: write ``iteration-time`` (``--log-timers-to-tensorboard``).
        metrics_file: the JSON-lines metrics file (None: none), written by the logging
            rank only.
        telemetry: timers, throughput, memory and W&B settings (default: none of them).
    """

    def __init__(self, train_iters: int, log_interval: int, tensorboard_dir: str | None,
                 tensorboard_log_interval: int = 1, is_logging_rank: bool = True,
                 queue_size: int = 1000, log_batch_size: bool = True,
                 log_validation_ppl: bool = True, log_timers: bool = True,
                 metrics_file: str | None = None, telemetry: Telemetry | None = None) -> None:
        self.train_iters = train_iters
        self.log_batch_size = log_batch_size
        self.log_validation_ppl = log_validation_ppl
        self.log_timers = log_timers
        self.log_interval = max(1, log_interval)
        self.tb_interval = max(1, tensorboard_log_interval)
        self.is_logging_rank = is_logging_rank
        self.writer = None
        if tensorboard_dir and is_logging_rank:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(log_dir=tensorboard_dir, max_queue=queue_size)
        self.metrics = MetricsWriter(metrics_file if is_logging_rank else None)
        self.telemetry = telemetry or Telemetry()
        self.timers = self.telemetry.timers
        self.wandb = self.telemetry.wandb if is_logging_rank else None
        self._memory_reported = False
        self._reset()

    def _reset(self) -> None:
        self.loss_sums: dict[str, float] = {}
        self.advanced = 0
        self.skipped = 0
        self.nan = 0
        self.interval_tokens = 0
        self.interval_iters = 0
        self.interval_flops: int | None = 0

    def record(self, stats: StepStats, elapsed_s: float) -> None:
        """Account one step; print a line every ``log_interval`` steps.

        Args:
            stats: the step's numbers.
            elapsed_s: wall time since the previous log line (only read on log steps).
        """
        self.interval_iters += 1
        self.interval_tokens += stats.step_tokens
        if self.interval_flops is not None and stats.flops is not None:
            self.interval_flops += stats.flops
        else:
            self.interval_flops = None
        if stats.skipped:
            self.skipped += 1
        else:
            self.advanced += 1
        for key, value in stats.losses.items():
            if not math.isfinite(value):
                self.nan += 1
            elif not stats.skipped:
                self.loss_sums[key] = self.loss_sums.get(key, 0.0) + value
        if stats.iteration % self.tb_interval == 0:
            self._write_step_scalars(stats)
        if stats.iteration % self.log_interval == 0:
            # collectives first, on every rank alike: the timers' all-gather
            times = self.timers.gather(self.timers.names(), normalizer=self.interval_iters)
            self._print_line(stats, elapsed_s, times)
            self._report_memory(stats.iteration)
            self._reset()

    def _scalars(self, scalars: dict[str, float | None], it: int, samples: int | None = None,
                 tokens: int | None = None) -> None:
        """Finite ``scalars`` at iteration ``it`` to TensorBoard (with ``vs samples`` /
        ``vs tokens`` curves when those x values are given) and to W&B (by iteration)."""
        finite = {k: v for k, v in scalars.items() if v is not None and math.isfinite(v)}
        if self.writer is not None:
            for name, value in finite.items():
                self.writer.add_scalar(name, value, it)
                if samples is not None:
                    self.writer.add_scalar(f"{name} vs samples", value, samples)
                if tokens is not None:
                    self.writer.add_scalar(f"{name} vs tokens", value, tokens)
        if self.wandb is not None and finite:
            self.wandb.log(finite, it)

    def _write_step_scalars(self, s: StepStats) -> None:
        if self.writer is None and self.wandb is None:
            return
        it, tok, smp = s.iteration, s.consumed_tokens, s.consumed_samples
        batch = {"batch-size": s.batch_size} if self.log_batch_size else {}
        self._scalars({"learning-rate": s.learning_rate, **batch, "loss-scale": s.loss_scale,
                       "grad-norm": s.grad_norm, **s.losses}, it, smp, tok)
        self._scalars({"consumed-tokens": tok}, it)
        if self.writer is not None:
            self.writer.add_scalar("steps-vs-tokens", it, tok)
        plain = {}
        for name, value in s.extra_scalars.items():    # the step's own plan, never a later one
            if isinstance(value, torch.Tensor):     # e.g. the sampled samples' metric values
                if self.writer is not None:
                    self.writer.add_histogram(name, value, it)
                continue
            plain[name] = value
        self._scalars(plain, it, tokens=tok)
        if self.telemetry.memory_to_tensorboard:
            self._scalars(tensorboard_memory(memory_stats()), it)

    def _throughput(self, elapsed_s: float) -> tuple[float, float | None, float | None]:
        """(tokens/s, TFLOP/s per device or None, MFU or None) of the interval."""
        tokens_per_s = self.interval_tokens / elapsed_s if elapsed_s > 0 else 0.0
        if self.interval_flops is None:
            return tokens_per_s, None, None
        tflops = tflops_per_device(self.interval_flops, elapsed_s, self.telemetry.world_size)
        return tokens_per_s, tflops, mfu(tflops, self.telemetry.peak_tflops)

    def _print_line(self, s: StepStats, elapsed_s: float,
                    times: dict[str, list[float]]) -> None:
        per_iter = elapsed_s / max(1, self.interval_iters)
        tokens_per_s, tflops, util = self._throughput(elapsed_s)
        if self.log_timers:
            self._scalars({"iteration-time": per_iter,
                           **{f"{n}-time": ms for n, ms in max_across_ranks(times).items()}},
                          s.iteration)
        self._scalars({"tokens-per-second": tokens_per_s}, s.iteration, tokens=s.consumed_tokens)
        self._scalars({"throughput": tflops, "mfu": util}, s.iteration)
        if not self.is_logging_rank:
            return
        losses = {key: total / max(1, self.advanced) for key, total in self.loss_sums.items()}
        self.metrics.write(
            "step", iteration=s.iteration, consumed_samples=s.consumed_samples,
            consumed_tokens=s.consumed_tokens, step_tokens=s.step_tokens,
            learning_rate=s.learning_rate, global_batch_size=s.batch_size,
            loss_scale=s.loss_scale, grad_norm=s.grad_norm, losses=losses,
            interval=self.interval_iters, iteration_time_s=per_iter,
            tokens_per_second=tokens_per_s, tflops_per_device=tflops, mfu=util,
            memory=memory_stats(), timers_ms={n: {"min": min(v for v in ms if v > 0),
                                                  "max": max(ms)} for n, ms in times.items()},
            skipped_iterations=self.skipped, nan_iterations=self.nan, plan=s.plan)
        line = f" iteration {s.iteration:8d}/{self.train_iters:8d} |"
        line += f" consumed samples: {s.consumed_samples:12d} |"
        line += f" consumed tokens: {s.consumed_tokens:12d} |"
        line += f" elapsed time per iteration (ms): {per_iter * 1000.0:.1f} |"
        if tflops is not None:
            line += f" throughput per GPU (TFLOP/s/GPU): {tflops:.1f} |"
        if util is not None:
            line += f" MFU: {util * 100.0:.1f}% |"
        line += f" learning rate: {s.learning_rate:.3E} |"
        line += f" global batch size: {s.batch_size:5d} |"
        for key, mean in losses.items():
            line += f" {key}: {mean:.6E} |"
        line += f" loss scale: {s.loss_scale:.1f} |"
        if s.grad_norm is not None:
            line += f" grad norm: {s.grad_norm:.3f} |"
        line += f" number of skipped iterations: {self.skipped:3d} |"
        line += f" number of nan iterations: {self.nan:3d} |"
        line += f" tokens per second: {tokens_per_s:.1f} |"
        print(line, flush=True)
        report = self.timers.report(times)
        if report is not None:
            print(report, flush=True)

    def _report_memory(self, iteration: int) -> None:
        """Megatron's memory report, on the reporting ranks, after the process's first log
        line and every ``--log-memory-interval`` iterations."""
        t = self.telemetry
        due = not self._memory_reported or (t.memory_interval and iteration % t.memory_interval == 0)
        if t.reports_memory and due:
            print(memory_report(memory_stats(), iteration, t.rank), flush=True)
            self._memory_reported = True

    def timer_report(self, names: list[str]) -> None:
        """Gather the named timers (a collective: every rank calls it) and print their
        report on the logging rank, e.g. ``save-checkpoint`` after a save."""
        times = self.timers.gather(names)
        report = self.timers.report(times)
        if self.is_logging_rank and report is not None:
            print(report, flush=True)

    def validation(self, iteration: int, consumed_samples: int, consumed_tokens: int,
                   losses: dict[str, float], prefix: str = "validation") -> None:
        """Print Megatron's validation block, write ``<key> validation`` scalars and the
        metrics file's ``eval`` line."""
        if not self.is_logging_rank or not losses:
            return
        self.metrics.write("eval", split=prefix, iteration=iteration,
                           consumed_samples=consumed_samples, consumed_tokens=consumed_tokens,
                           values=losses)
        text = f" {prefix} loss at iteration {iteration} | "
        for key, value in losses.items():
            text += f"{key} value: {value:.6E} | "
            derived = [("", value)]
            if "loss" in key:   # a perplexity only for losses (not for e.g. lm accuracy)
                ppl = math.exp(min(20.0, value))
                text += f"{key} PPL: {ppl:.6E} | "
                if self.log_validation_ppl:   # --log-validation-ppl-to-tensorboard
                    derived.append((" ppl", ppl))
            self._scalars({f"{key} {prefix}{suffix}": v for suffix, v in derived}, iteration,
                          consumed_samples, consumed_tokens)
        bar = "-" * (len(text) + 1)
        print(f"{bar}\n{text}\n{bar}", flush=True)

    def start(self, **fields) -> None:
        """The metrics file's ``start`` line (``megatron.metrics_file``)."""
        self.metrics.write("start", **fields)

    def end(self, **fields) -> None:
        """The metrics file's ``end`` line (``megatron.metrics_file``)."""
        self.metrics.write("end", **fields)

    def close(self) -> None:
        self.metrics.close()
        if self.wandb is not None:
            self.wandb.close()
            self.wandb = None
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None
