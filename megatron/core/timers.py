"""Per-phase timers with Megatron-LM's names, levels and report format.

``Timers(log_level, log_option)`` hands out a named ``Timer`` for every phase whose level
is at most ``--timing-log-level`` and a do-nothing timer for the others:

* level 0: nothing per step (the iteration line's elapsed time, measured by the loop as
  before, and ``save-checkpoint``, timed around each save);
* level 1: phases that run about once per step: ``forward-backward``, ``all-grads-sync``,
  ``optimizer`` and its parts (``optimizer-copy-to-main-grad``,
  ``optimizer-unscale-and-check-inf``, ``optimizer-clip-main-grad``,
  ``optimizer-inner-step``, ``optimizer-copy-main-to-model-params``), ``params-all-gather``;
* level 2: phases that run once per micro-batch: ``batch-generator``,
  ``forward-compute``, ``backward-compute`` and the pipeline exchanges
  (``forward-recv``, ``forward-send``, ``backward-recv``, ``backward-send``,
  ``forward-send-backward-recv``, ``backward-send-forward-recv``,
  ``forward-backward-send-forward-backward-recv``).

Host synchronisation: a GPU runs kernels asynchronously, so a wall-clock timer only
measures a phase if the device is drained at its start and stop. A ``Timer`` therefore
calls ``torch.cuda.synchronize()`` on start and stop (as Megatron-LM's timers do), and a
level-1 step timer also starts with a barrier over all ranks (Megatron's
``barrier_with_L1_time``, on unless ``--no-barrier-with-level-1-timing``), which charges
waiting for a slow rank to the waiting, not to the phase. The timers of a level above
``--timing-log-level`` are the do-nothing timer: they never synchronise, so level 0 adds
no host sync to the step. On CPU there is nothing to synchronise.

Reports (``gather`` then ``report``) are collectives: every rank calls them at the same
log step with the same names.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from megatron.core.devices import collective_device

LOG_OPTIONS = ("max", "minmax", "all")

# Megatron-LM's names, in its report order, by the level that turns them on.
STEP_TIMERS = {
    1: ("forward-backward", "all-grads-sync", "params-all-gather",
        "optimizer-copy-to-main-grad", "optimizer-unscale-and-check-inf",
        "optimizer-clip-main-grad", "optimizer-inner-step",
        "optimizer-copy-main-to-model-params", "optimizer"),
    2: ("batch-generator", "forward-compute", "backward-compute", "forward-recv",
        "forward-send", "backward-recv", "backward-send", "forward-send-backward-recv",
        "backward-send-forward-recv", "forward-backward-send-forward-backward-recv"),
}
LEVEL_OF = {name: level for level, names in STEP_TIMERS.items() for name in names}
LEVEL_OF["save-checkpoint"] = 0


def _synchronize() -> None:
    """Drain the GPU's queue (nothing to do on CPU or before CUDA is in use)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _barrier(wanted: bool) -> None:
    if wanted and dist.is_available() and dist.is_initialized():
        dist.barrier()


class Timer:
    """Accumulates the wall time between ``start`` and ``stop`` calls (seconds)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.total = 0.0
        self._started_at: float | None = None

    def start(self, barrier: bool = False) -> "Timer":
        if self._started_at is not None:
            raise RuntimeError(f"timer {self.name!r} started twice")
        _barrier(barrier)
        _synchronize()
        self._started_at = time.perf_counter()
        return self

    def stop(self, barrier: bool = False) -> None:
        if self._started_at is None:
            raise RuntimeError(f"timer {self.name!r} stopped without being started")
        _barrier(barrier)
        _synchronize()
        self.total += time.perf_counter() - self._started_at
        self._started_at = None

    def take(self, reset: bool = True) -> float:
        """Seconds accumulated so far (a running timer counts up to now)."""
        running = self._started_at is not None
        if running:
            self.stop()
        total = self.total
        if reset:
            self.total = 0.0
        if running:
            self.start()
        return total

    def __enter__(self) -> "Timer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Off:
    """The timer of a level not asked for: does nothing, never synchronises."""

    def start(self, barrier: bool = False) -> "_Off":
        return self

    def stop(self, barrier: bool = False) -> None:
        return None

    def __enter__(self) -> "_Off":
        return self

    def __exit__(self, *exc) -> None:
        return None


_OFF = _Off()


class _Phase:
    """``with`` block of one timed phase (``Timers.phase``)."""

    def __init__(self, timer: Timer, barrier: bool) -> None:
        self.timer, self.barrier = timer, barrier

    def __enter__(self) -> Timer:
        return self.timer.start(self.barrier)

    def __exit__(self, *exc) -> None:
        self.timer.stop()


@dataclass(frozen=True)
class TimerConfig:
    """``--timing-log-level``, ``--timing-log-option`` and the level-1 barrier."""
    log_level: int = 0
    log_option: str = "minmax"
    barrier_level_1: bool = True

    def __post_init__(self) -> None:
        if self.log_level not in (0, 1, 2):
            raise ValueError(f"--timing-log-level must be 0, 1 or 2, got {self.log_level}")
        if self.log_option not in LOG_OPTIONS:
            raise ValueError(f"--timing-log-option must be one of {LOG_OPTIONS}, got "
                             f"{self.log_option!r}")


class Timers:
    """The run's timers: ``timers(name)`` is the phase's ``Timer`` when its level (from
    ``LEVEL_OF``, or ``log_level``) is on, else a do-nothing timer.

    Args:
        config: the level, the report option and the level-1 barrier; None: every timer
            off (level -1), for callers that time nothing.
    """

    def __init__(self, config: TimerConfig | None = None) -> None:
        self.config = config
        self.level = -1 if config is None else config.log_level
        self._timers: dict[str, Timer] = {}

    def __call__(self, name: str, log_level: int | None = None) -> Timer | _Off:
        level = LEVEL_OF.get(name, 2) if log_level is None else log_level
        if level > self.level:
            return _OFF
        if name not in self._timers:
            self._timers[name] = Timer(name)
        return self._timers[name]

    def phase(self, name: str) -> "_Phase | _Off":
        """``with timers.phase(name):`` times the block; a level-1 step timer starts with
        a barrier over all ranks unless ``--no-barrier-with-level-1-timing`` (Megatron's
        ``barrier_with_L1_time``: every rank must run the block)."""
        timer = self(name)
        if timer is _OFF:
            return _OFF
        barrier = bool(self.config.barrier_level_1 and LEVEL_OF.get(name) == 1)
        return _Phase(timer, barrier)

    def names(self) -> list[str]:
        """The step timers of the configured level, in Megatron's report order."""
        return [n for level in (1, 2) if level <= self.level for n in STEP_TIMERS[level]]

    def gather(self, names: list[str], normalizer: float = 1.0,
               reset: bool = True) -> dict[str, list[float]]:
        """Milliseconds of each timer on every rank (``/ normalizer``; 0: not run there).

        A collective over all ranks (one all-gather of ``len(names)`` floats); every rank
        must call it with the same names.

        Returns:
            name -> per-rank milliseconds, for the names some rank ran.
        """
        if not names:
            return {}
        mine = torch.tensor([self._timers[n].take(reset) if n in self._timers else 0.0
                             for n in names], dtype=torch.float64)
        rows = [mine]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            local = mine.to(collective_device())
            rows = [torch.empty_like(local) for _ in range(dist.get_world_size())]
            dist.all_gather(rows, local)
        table = torch.stack([r.cpu() for r in rows]) * 1000.0 / normalizer   # [ranks, names]
        return {n: table[:, i].tolist() for i, n in enumerate(names) if table[:, i].max() > 0}

    def report(self, times: dict[str, list[float]]) -> str | None:
        """Megatron's text for ``--timing-log-option`` (None when nothing ran)."""
        if not times:
            return None
        option = self.config.log_option if self.config is not None else "minmax"
        if option == "all":
            text = "times across ranks (ms):"
            for name, per_rank in times.items():
                text += f"\n  {name}:"
                for rank, ms in enumerate(per_rank):
                    if ms > 0:
                        text += f"\n     rank {rank:2d}: {ms:.2f}"
            return text
        text = ("max time across ranks (ms):" if option == "max"
                else "(min, max) time across ranks (ms):")
        for name, per_rank in times.items():
            ran = [ms for ms in per_rank if ms > 0]    # ranks that never ran it don't count
            label = (name + " ").ljust(48, ".")
            text += (f"\n    {label}: {max(ran):.2f}" if option == "max"
                     else f"\n    {label}: ({min(ran):.2f}, {max(ran):.2f})")
        return text


def max_across_ranks(times: dict[str, list[float]]) -> dict[str, float]:
    """name -> the slowest rank's milliseconds (what TensorBoard gets, as in Megatron)."""
    return {name: max(per_rank) for name, per_rank in times.items()}


NO_TIMERS = Timers(None)
