"""Curriculum pacing: turn a training step into a difficulty threshold.

The formulas match DeepSpeed's ``CurriculumScheduler`` so that settings carry over
(DESIGN section 3):

* ``fixed_root``:   ``d(t) = floor((t / T) ** (1 / root) * (d_max - d_min) + d_min)``,
  rounded down to a multiple of ``difficulty_step``; where that lands below ``d_min``
  it is raised to the first multiple of ``difficulty_step`` at or above ``d_min``;
  never above ``d_max`` (DeepSpeed 0.19.8's ``CurriculumScheduler``).
* ``fixed_linear``: ``fixed_root`` with ``root = 1``.
* ``fixed_discrete``: ``difficulty[i]`` for the first ``i`` with ``t <= max_step[i]``,
  else the last entry (DeepSpeed requires ``len(difficulty) == len(max_step) + 1``); as in
  DeepSpeed a level above ``d_max`` is not capped.
* ``custom``: a user callable ``fn(step) -> difficulty`` given as ``"module:function"``.

Step convention: ``step`` is **1-based**, the number of the optimizer step about to run,
exactly as DeepSpeed calls ``update_difficulty(global_steps)``. In a Megatron loop whose
``iteration`` counts completed steps, the step about to run is ``iteration + 1``.

Once ``d_max`` has been reached the difficulty stays there (DeepSpeed's latch), even if a
discrete or custom schedule would go down again afterwards.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable

SCHEDULE_TYPES = ("fixed_linear", "fixed_root", "fixed_discrete", "custom")


@dataclass
class ScheduleConfig:
    """Pacing settings of one curriculum metric (DeepSpeed's ``schedule_config`` + limits).

    Attributes:
        schedule_type: one of ``SCHEDULE_TYPES``.
        min_difficulty: ``d_min``; the difficulty at step 0.
        max_difficulty: ``d_max``; never exceeded.
        total_curriculum_step: ``T`` (fixed_linear / fixed_root).
        difficulty_step: results are multiples of this (fixed_linear / fixed_root).
        root_degree: root of the pacing curve (fixed_root; 1 for fixed_linear).
        difficulty: the discrete levels (fixed_discrete).
        max_step: last step of each discrete level but the final one (fixed_discrete).
        custom_function: ``"module:function"`` import path (custom).
    """

    schedule_type: str
    min_difficulty: float
    max_difficulty: float
    total_curriculum_step: int | None = None
    difficulty_step: int = 1
    root_degree: float | None = None
    difficulty: list[float] = field(default_factory=list)
    max_step: list[int] = field(default_factory=list)
    custom_function: str | None = None

    def validate(self, where: str = "schedule") -> None:
        """Raise ``ValueError`` naming ``where`` if the settings cannot work."""
        t = self.schedule_type
        if t not in SCHEDULE_TYPES:
            raise ValueError(f"{where}.schedule_type={t!r}: expected one of {SCHEDULE_TYPES}")
        if self.min_difficulty > self.max_difficulty:
            raise ValueError(f"{where}: min_difficulty {self.min_difficulty} > "
                             f"max_difficulty {self.max_difficulty}")
        if t in ("fixed_linear", "fixed_root"):
            if not self.total_curriculum_step or self.total_curriculum_step <= 0:
                raise ValueError(f"{where}.total_curriculum_step must be a positive integer "
                                 f"for {t}, got {self.total_curriculum_step}")
            if self.difficulty_step is None or self.difficulty_step < 1:
                raise ValueError(f"{where}.difficulty_step must be >= 1, got "
                                 f"{self.difficulty_step}")
        if t == "fixed_root" and (self.root_degree is None or self.root_degree <= 0):
            raise ValueError(f"{where}.root_degree must be > 0 for fixed_root, "
                             f"got {self.root_degree}")
        if t == "fixed_discrete":
            if not self.difficulty or len(self.difficulty) != len(self.max_step) + 1:
                raise ValueError(f"{where}: fixed_discrete needs len(difficulty) == "
                                 f"len(max_step) + 1, got {len(self.difficulty)} and "
                                 f"{len(self.max_step)}")
            if any(b <= a for a, b in zip(self.max_step, self.max_step[1:])):
                raise ValueError(f"{where}.max_step must be strictly increasing: "
                                 f"{self.max_step}")
        if t == "custom" and not self.custom_function:
            raise ValueError(f"{where}: schedule_type custom needs custom_function "
                             f"'module:function'")


def load_callable(path: str) -> Callable[[int], float]:
    """Import ``"package.module:function"`` and return the function."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"custom curriculum function {path!r}: expected 'module:function'")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"custom curriculum function {path!r} cannot be loaded: {err}") from err
    if not callable(fn):
        raise ValueError(f"custom curriculum function {path!r} is not callable")
    return fn


class CurriculumScheduler:
    """Stateful pacing function of one metric (DeepSpeed-compatible).

    Args:
        config: the metric's ``ScheduleConfig``.
        custom_fn: optional callable overriding ``config.custom_function``.
    """

    def __init__(self, config: ScheduleConfig, custom_fn: Callable[[int], float] | None = None):
        config.validate()
        self.config = config
        self._fn = custom_fn
        if config.schedule_type == "custom" and self._fn is None:
            self._fn = load_callable(config.custom_function)
        self.current_difficulty = config.min_difficulty
        self.step = 0

    # -- pure formula --------------------------------------------------------------
    def _root(self, step: int, root: float) -> float:
        c = self.config
        frac = (float(step) / c.total_curriculum_step) ** (1.0 / root)
        d = math.floor(frac * (c.max_difficulty - c.min_difficulty) + c.min_difficulty)
        d_step = c.difficulty_step
        d -= d % d_step
        # DeepSpeed 0.19.8: raise to the first multiple of difficulty_step >= d_min; cap at d_max.
        d = max(d, -(-c.min_difficulty // d_step) * d_step)
        return min(d, c.max_difficulty)

    def _discrete(self, step: int) -> float:
        c = self.config
        for level, last_step in zip(c.difficulty, c.max_step):
            if step <= last_step:
                return level
        return c.difficulty[-1]

    def get_difficulty(self, step: int) -> float:
        """Difficulty of the formula at 1-based ``step`` (no latch).

        As DeepSpeed, only fixed_linear / fixed_root are capped at ``d_max``: a discrete
        level or a custom value above it is used as given (and then latched).
        """
        c = self.config
        if c.schedule_type == "fixed_linear":
            d = self._root(step, 1.0)
        elif c.schedule_type == "fixed_root":
            d = self._root(step, c.root_degree)
        elif c.schedule_type == "fixed_discrete":
            d = self._discrete(step)
        else:
            d = self._fn(step)
            if not isinstance(d, (int, float)) or isinstance(d, bool) or not math.isfinite(d):
                raise ValueError(f"custom curriculum function {c.custom_function!r} returned "
                                 f"{d!r} at step {step}; expected a finite number")
        return d

    # -- stateful use --------------------------------------------------------------
    def update_difficulty(self, step: int) -> float:
        """Advance to 1-based ``step`` and return the difficulty in force for it.

        Mirrors DeepSpeed: the value only changes while the current one is below ``d_max``.
        """
        if self.current_difficulty < self.config.max_difficulty:
            self.current_difficulty = self.get_difficulty(step)
        self.step = step
        return self.current_difficulty

    def difficulty_at(self, step: int) -> float:
        """Difficulty in force at ``step`` without changing state.

        Exact for the fixed schedules (their latch is implied by the formula or found by
        scanning the discrete levels); for ``custom`` the latch is taken from the state.
        """
        c = self.config
        if c.min_difficulty >= c.max_difficulty:      # DeepSpeed never updates from d_min
            return c.min_difficulty
        if c.schedule_type == "fixed_discrete":
            for level, last_step in zip(c.difficulty, c.max_step):
                if step <= last_step or level >= c.max_difficulty:   # in force, or latched
                    return level
            return c.difficulty[-1]
        if c.schedule_type == "custom" and self.current_difficulty >= c.max_difficulty \
                and step >= self.step:
            return self.current_difficulty
        return self.get_difficulty(step)

    def state_dict(self) -> dict[str, Any]:
        return {"current_difficulty": self.current_difficulty, "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.current_difficulty = state["current_difficulty"]
        self.step = int(state["step"])
