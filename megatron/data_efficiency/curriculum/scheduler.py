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
discrete or custom schedule would go down again afterwards. The scheduler is pure: the
difficulty of a step is a function of the config and the step, so nothing is checkpointed.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Callable

from megatron.data_efficiency.pacing import paced_value

SCHEDULE_TYPES = ("fixed_linear", "fixed_root", "fixed_discrete", "custom")


@dataclass(frozen=True)
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
    """Pacing function of one metric (DeepSpeed-compatible), pure in the step.

    ``difficulty_at(step)`` is the difficulty DeepSpeed's stateful scheduler holds after
    ``update_difficulty`` was called for every step ``1 .. step`` (as the training loop
    does), latch included, computed without state: the fixed schedules imply the latch in
    their formula or their levels, and for ``custom`` the first step that reaches ``d_max``
    is found by a forward scan whose result is cached (a cache of a pure function: calling
    it never changes what any step gets).

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
        self._scanned = 0                      # custom: steps 1.._scanned checked for d_max
        self._max_from: int | None = None      # custom: first step whose value is d_max

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
        if c.schedule_type in ("fixed_linear", "fixed_root"):
            root = 1.0 if c.schedule_type == "fixed_linear" else c.root_degree
            return paced_value(step, c.total_curriculum_step, c.min_difficulty,
                               c.max_difficulty, c.difficulty_step, root)
        if c.schedule_type == "fixed_discrete":
            d = self._discrete(step)
        else:
            d = self._fn(step)
            if not isinstance(d, (int, float)) or isinstance(d, bool) or not math.isfinite(d):
                raise ValueError(f"custom curriculum function {c.custom_function!r} returned "
                                 f"{d!r} at step {step}; expected a finite number")
        return d

    def _custom_reached_max(self, step: int) -> bool:
        while self._max_from is None and self._scanned < step:
            self._scanned += 1
            if self.get_difficulty(self._scanned) >= self.config.max_difficulty:
                self._max_from = self._scanned
        return self._max_from is not None and self._max_from <= step

    def difficulty_at(self, step: int) -> float:
        """Difficulty in force at 1-based ``step``: once ``d_max`` is reached it stays."""
        c = self.config
        if step < 1:
            raise ValueError(f"curriculum steps are 1-based, got {step}")
        if c.min_difficulty >= c.max_difficulty:      # DeepSpeed never updates from d_min
            return c.min_difficulty
        if c.schedule_type == "fixed_discrete":
            for level, last_step in zip(c.difficulty, c.max_step):
                if step <= last_step or level >= c.max_difficulty:   # in force, or latched
                    return level
            return c.difficulty[-1]
        if c.schedule_type == "custom" and self._custom_reached_max(step):
            # DeepSpeed latches the first value at or above d_max (not capped)
            return self.get_difficulty(self._max_from)
        return self.get_difficulty(step)
