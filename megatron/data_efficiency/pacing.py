"""The one pacing formula shared by the curriculum and random-LTD's MSLG schedule.

Both DeepSpeed schedules grow a value from ``lo`` to ``hi`` over ``total`` steps,
rounded down to a multiple of ``multiple``, in DeepSpeed's float arithmetic::

    v(t) = floor((t / total) ** (1 / root) * (hi - lo) + lo);  v -= v % multiple

``t / total`` is not clamped at 1 (as in both DeepSpeed schedulers): past ``total`` the
value keeps growing until its rounded-down multiple reaches ``hi``, so a ``hi`` that is
no multiple of ``multiple`` is still reached (shortly after ``total``). The result is
raised to ``minimum`` where it lands below it and is never above ``hi``. The callers
choose ``minimum``: the curriculum raises to the first multiple at or above ``lo``
(current DeepSpeed: lo 5, multiple 8 gives 8); MSLG raises only a result of 0, to one
``multiple`` (DeepSpeed keeps 0 tokens there). The curriculum counts steps from 1,
MSLG from 0; the callers pass their own step.
"""
from __future__ import annotations

import math


def paced_value(t: int, total: int, lo: float, hi: float, multiple: int = 1,
                root: float = 1.0, minimum: float | None = None) -> float:
    """The paced value at step ``t`` (see the module docstring).

    Args:
        t: the step, in the caller's origin (>= 0).
        total: steps to reach ``hi`` (``<= 0``: ``hi`` at once).
        lo, hi: the start and end values, ``lo <= hi``.
        multiple: results are multiples of this (>= 1).
        root: the root degree of the curve (1: linear).
        minimum: the smallest value returned (default: the first multiple >= ``lo``).

    Returns:
        The value, an ``int`` when ``lo`` and ``hi`` are whole numbers.
    """
    if t < 0:
        raise ValueError(f"pacing: step must be >= 0, got {t}")
    whole = float(lo).is_integer() and float(hi).is_integer()
    if total <= 0:
        v = hi
    else:
        v = math.floor((float(t) / total) ** (1.0 / root) * (hi - lo) + lo)
        v -= v % multiple
        floor_at = math.ceil(lo / multiple) * multiple if minimum is None else minimum
        v = max(v, floor_at)
    v = min(v, hi)
    return int(v) if whole else v
