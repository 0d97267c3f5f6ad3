"""The training log line, the validation line, the TensorBoard scalars (Megatron's names,
plus Megatron-DeepSpeed's ``... vs tokens`` curves with consumed tokens as x) and the
metrics file (``megatron.metrics_file``: the same numbers as JSON lines, for programs).
Each log step's numbers are computed once and then printed, written to TensorBoard and
written to the metrics file, so what a program reads never depends on the wording of the
printed line."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from megatron.metrics_file import MetricsWriter


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
    """

    def __init__(self, train_iters: int, log_interval: int, tensorboard_dir: str | None,
                 tensorboard_log_interval: int = 1, is_logging_rank: bool = True,
                 queue_size: int = 1000, log_batch_size: bool = True,
                 log_validation_ppl: bool = True, log_timers: bool = True,
                 metrics_file: str | None = None) -> None:
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
        self._reset()

    def _reset(self) -> None:
        self.loss_sums: dict[str, float] = {}
        self.advanced = 0
        self.skipped = 0
        self.nan = 0
        self.interval_tokens = 0
        self.interval_iters = 0

    def record(self, stats: StepStats, elapsed_s: float) -> None:
        """Account one step; print a line every ``log_interval`` steps.

        Args:
            stats: the step's numbers.
            elapsed_s: wall time since the previous log line (only read on log steps).
        """
        self.interval_iters += 1
        self.interval_tokens += stats.step_tokens
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
            self._print_line(stats, elapsed_s)
            self._reset()

    def _write_step_scalars(self, s: StepStats) -> None:
        if self.writer is None:
            return
        it, tok, smp = s.iteration, s.consumed_tokens, s.consumed_samples
        w = self.writer
        batch = [("batch-size", s.batch_size)] if self.log_batch_size else []
        for name, value in (("learning-rate", s.learning_rate), *batch,
                            ("loss-scale", s.loss_scale), ("grad-norm", s.grad_norm),
                            *s.losses.items()):
            if value is None or not math.isfinite(value):
                continue
            w.add_scalar(name, value, it)
            w.add_scalar(f"{name} vs samples", value, smp)
            w.add_scalar(f"{name} vs tokens", value, tok)
        w.add_scalar("consumed-tokens", tok, it)
        w.add_scalar("steps-vs-tokens", it, tok)
        for name, value in s.extra_scalars.items():    # the step's own plan, never a later one
            if isinstance(value, torch.Tensor):     # e.g. the sampled samples' metric values
                w.add_histogram(name, value, it)
                continue
            w.add_scalar(name, value, it)
            w.add_scalar(f"{name} vs tokens", value, tok)

    def _print_line(self, s: StepStats, elapsed_s: float) -> None:
        per_iter = elapsed_s / max(1, self.interval_iters)
        tokens_per_s = self.interval_tokens / elapsed_s if elapsed_s > 0 else 0.0
        if self.writer is not None and self.log_timers:
            self.writer.add_scalar("iteration-time", per_iter, s.iteration)
        if self.writer is not None:
            self.writer.add_scalar("tokens-per-second", tokens_per_s, s.iteration)
            self.writer.add_scalar("tokens-per-second vs tokens", tokens_per_s, s.consumed_tokens)
        if not self.is_logging_rank:
            return
        losses = {key: total / max(1, self.advanced) for key, total in self.loss_sums.items()}
        self.metrics.write(
            "step", iteration=s.iteration, consumed_samples=s.consumed_samples,
            consumed_tokens=s.consumed_tokens, step_tokens=s.step_tokens,
            learning_rate=s.learning_rate, global_batch_size=s.batch_size,
            loss_scale=s.loss_scale, grad_norm=s.grad_norm, losses=losses,
            interval=self.interval_iters, iteration_time_s=per_iter,
            tokens_per_second=tokens_per_s, skipped_iterations=self.skipped,
            nan_iterations=self.nan, plan=s.plan)
        line = f" iteration {s.iteration:8d}/{self.train_iters:8d} |"
        line += f" consumed samples: {s.consumed_samples:12d} |"
        line += f" consumed tokens: {s.consumed_tokens:12d} |"
        line += f" elapsed time per iteration (ms): {per_iter * 1000.0:.1f} |"
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
            if self.writer is not None:
                for suffix, v in derived:
                    name = f"{key} {prefix}{suffix}"
                    self.writer.add_scalar(name, v, iteration)
                    self.writer.add_scalar(f"{name} vs samples", v, consumed_samples)
                    self.writer.add_scalar(f"{name} vs tokens", v, consumed_tokens)
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
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None
