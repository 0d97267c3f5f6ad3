"""Run telemetry beyond the loss line: the flags (Megatron-LM's names), memory readings
and the optional Weights & Biases writer.

* ``--timing-log-level 0|1|2``, ``--timing-log-option max|minmax|all``,
  ``--no-barrier-with-level-1-timing``: the per-phase timers (``megatron.core.timers``),
  printed under the iteration line at each log step; ``--log-timers-to-tensorboard``
  also writes them (``<name>-time``, the slowest rank's ms) and ``iteration-time``.
* ``--peak-tflops``: the per-device peak MFU is measured against (default: the table in
  ``megatron.throughput`` for the GPU; none on CPU). ``--log-throughput`` is accepted for
  Megatron-LM scripts: the line always shows the throughput here.
* ``--log-memory-to-tensorboard``, ``--log-memory-interval``: memory (GPU: allocated,
  reserved, peak; CPU: resident set) to TensorBoard and as Megatron's memory report line.
* ``--wandb-project``, ``--wandb-exp-name``, ``--wandb-save-dir``: the scalars TensorBoard
  gets by iteration, to W&B from the last rank; ``wandb`` is imported only then.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import resource

import torch

from megatron.core.timers import TimerConfig

WANDB_INSTALL = "pip install wandb (listed in requirements-eval.txt)"


def add_telemetry_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("telemetry")
    g.add_argument("--timing-log-level", type=int, default=0, choices=[0, 1, 2],
                   help="0: the iteration time only (no timer syncs the step); 1: phases run "
                        "about once per step (forward-backward, gradient sync, optimizer "
                        "parts); 2: also per micro-batch phases (batch generator, forward "
                        "and backward compute, pipeline send/receive). Levels 1 and 2 "
                        "synchronise the GPU around each timed phase")
    g.add_argument("--timing-log-option", default="minmax", choices=["max", "minmax", "all"],
                   help="report each timer's max over ranks, (min, max), or every rank's")
    g.add_argument("--no-barrier-with-level-1-timing", action="store_false",
                   dest="barrier_with_L1_time",
                   help="level-1 step timers start and stop without a barrier over all ranks")
    g.add_argument("--log-timers-to-tensorboard", action="store_true",
                   help="write iteration-time and the timers (<name>-time) to TensorBoard")
    g.add_argument("--log-throughput", action="store_true",
                   help="accepted for Megatron-LM scripts: the iteration line always shows "
                        "throughput per GPU (TFLOP/s/GPU) here")
    g.add_argument("--peak-tflops", type=float, default=None,
                   help="per-device peak TFLOP/s for the MFU field (default: the bf16 dense "
                        "peak of a known GPU; no MFU on CPU)")
    g.add_argument("--log-memory-to-tensorboard", action="store_true",
                   help="write memory (mem-allocated-bytes, mem-reserved-bytes, "
                        "mem-max-allocated-bytes on GPU; mem-rss-bytes, mem-max-rss-bytes "
                        "on CPU) to TensorBoard")
    g.add_argument("--log-memory-interval", type=int, default=None,
                   help="print the memory report every this many iterations (a multiple "
                        "of --log-interval; it is always printed at the first log step)")
    g.add_argument("--wandb-project", default=None,
                   help="also log to this Weights & Biases project (needs wandb)")
    g.add_argument("--wandb-exp-name", default=None, help="the W&B run name")
    g.add_argument("--wandb-save-dir", default=None,
                   help="where W&B writes its files (default: <--save>/wandb)")


def telemetry_problems(args: argparse.Namespace) -> list[str]:
    """What is wrong with the telemetry flags (every problem, each naming its flag)."""
    problems = []
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        problems.append(f"--peak-tflops must be > 0, got {args.peak_tflops}")
    interval = args.log_memory_interval
    if interval is not None and (interval < 1 or interval % max(1, args.log_interval)):
        problems.append(f"--log-memory-interval {interval} must be a positive multiple of "
                        f"--log-interval {args.log_interval}")
    if args.wandb_project:
        if not args.wandb_exp_name:
            problems.append("--wandb-project needs --wandb-exp-name (the run's name)")
        if not args.wandb_save_dir and not args.save:
            problems.append("--wandb-project needs --wandb-save-dir or --save (W&B writes "
                            "its files there)")
        if importlib.util.find_spec("wandb") is None:
            problems.append(f"--wandb-project needs the wandb package: {WANDB_INSTALL}")
    return problems


def timer_config_from_args(args: argparse.Namespace) -> TimerConfig:
    return TimerConfig(args.timing_log_level, args.timing_log_option, args.barrier_with_L1_time)


def _rss_bytes() -> int:
    """This process's resident set size now (``/proc/self/statm``; the peak elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return _max_rss_bytes()


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux: KiB


def memory_stats() -> dict[str, int]:
    """This process's memory in bytes: on a GPU the caching allocator's ``allocated``,
    ``reserved`` and their peaks (no device sync), else the resident set and its peak."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return {"allocated_bytes": torch.cuda.memory_allocated(),
                "max_allocated_bytes": torch.cuda.max_memory_allocated(),
                "reserved_bytes": torch.cuda.memory_reserved(),
                "max_reserved_bytes": torch.cuda.max_memory_reserved()}
    rss = _rss_bytes()
    return {"rss_bytes": rss, "max_rss_bytes": max(rss, _max_rss_bytes())}


def memory_report(memory: dict[str, int], iteration: int, rank: int) -> str:
    """Megatron's memory report line, e.g. ``[Rank 0] (after 10 iterations) memory (MB) |
    allocated: ... | max allocated: ... | reserved: ... | max reserved: ...``."""
    text = f"[Rank {rank}] (after {iteration} iterations) memory (MB)"
    for key, value in memory.items():
        label = key.removesuffix("_bytes").replace("max_", "max ")
        text += f" | {label}: {value / 2**20:.2f}"
    return text


def tensorboard_memory(memory: dict[str, int]) -> dict[str, int]:
    """Megatron's TensorBoard names of the memory readings (``mem-<what>-bytes``)."""
    return {f"mem-{key.removesuffix('_bytes').replace('_', '-')}-bytes": value
            for key, value in memory.items()}


class WandbWriter:
    """Scalars to a Weights & Biases run (the last rank only, as Megatron-LM).

    Args:
        project, name: ``--wandb-project``, ``--wandb-exp-name``.
        save_dir: where W&B writes (``WANDB_MODE=offline``: only there).
        config: the run's settings, shown with the run.
    """

    def __init__(self, project: str, name: str, save_dir: str, config: dict) -> None:
        import wandb    # only when asked for; validate_args checked it is installed
        os.makedirs(save_dir, exist_ok=True)
        self.run = wandb.init(project=project, name=name, dir=save_dir, config=config)

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


def wandb_writer(args: argparse.Namespace, is_last_rank: bool) -> WandbWriter | None:
    """The run's W&B writer (None: no ``--wandb-project``, or not the last rank)."""
    if not args.wandb_project or not is_last_rank:
        return None
    save_dir = args.wandb_save_dir or os.path.join(args.save, "wandb")
    config = {k: v for k, v in vars(args).items()
              if isinstance(v, (int, float, str, bool, type(None), list, tuple))}
    return WandbWriter(args.wandb_project, args.wandb_exp_name, save_dir, config)
