"""Run telemetry beyond the loss line: memory readings and the optional Weights & Biases
writer, set by these flags (Megatron-LM's names; ``megatron.telemetry_flags`` defines and
checks them):

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

import os
import resource

import torch

from megatron.core.timers import TimerConfig
from megatron.run_config import LoggingConfig, RunConfig



def timer_config(logging: LoggingConfig) -> TimerConfig:
    return TimerConfig(logging.timing_log_level, logging.timing_log_option,
                       logging.barrier_with_L1_time)


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


def wandb_writer(config: RunConfig, is_last_rank: bool) -> WandbWriter | None:
    """The run's W&B writer (None: no ``--wandb-project``, or not the last rank); the
    run's config is its ``RunConfig.to_dict()``."""
    logging = config.logging
    if not logging.wandb_project or not is_last_rank:
        return None
    save_dir = logging.wandb_save_dir or os.path.join(config.checkpointing.save, "wandb")
    return WandbWriter(logging.wandb_project, logging.wandb_exp_name, save_dir,
                       config.to_dict())
