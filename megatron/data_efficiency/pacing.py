"""The one pacing formula shared by the curriculum and random-LTD's MSLG schedule.

Both DeepSpeed schedules grow a value from ``lo`` to ``hi`` over ``total`` steps,
rounded down to a multiple of ``multiple``::

    v(t) = floor((t' / total) ** (1 / root) * (hi - lo) + lo)

with ``t' = min(t, total)`` when ``clamp`` (MSLG) and ``t' = t`` otherwise (DeepSpeed's
curriculum, whose ``d_max`` when it is not a multiple is reached only once the unrounded
value passes the next multiple), then ``v -= v % multiple``; where that lands below ``lo`` it is raised to the first
multiple at or above ``lo`` (current DeepSpeed: lo 5, multiple 8 gives 8); never above
``hi``. The curriculum's ``fixed_linear`` / ``fixed_root`` and MSLG (``root = 1``) are
this function; only their step origin differs (the curriculum counts from 1, MSLG from 0),
which the callers pass in.

``exact`` (MSLG here, with whole-number bounds) computes the linear case in integers, so
``t / total * (hi - lo)`` never loses a unit to float rounding; the curriculum keeps
DeepSpeed's float arithmetic so that its difficulties equal DeepSpeed's step for step
(including the rare step where the float product lands just below a whole number).
"""
from __future__ import annotations

import math


def paced_value(t: int, total: int, lo: float, hi: float, multiple: int = 1,
                root: float = 1.0, clamp: bool = True, exact: bool = False) -> float:
    """The paced value at step ``t`` (see the module docstring).

    Args:
        t: the step, in the caller's origin (>= 0).
        total: steps to reach ``hi`` (``<= 0``: ``hi`` at once).
        lo, hi: the start and end values, ``lo <= hi``.
        multiple: results are multiples of this (>= 1).
        root: the root degree of the curve (1: linear).
        clamp: stop the step at ``total`` (MSLG) or not (the curriculum).
        exact: integer arithmetic for ``root == 1`` and whole-number bounds.

    Returns:
        The value, an ``int`` when ``lo`` and ``hi`` are whole numbers.
    """
    if t < 0:
        raise ValueError(f"pacing: step must be >= 0, got {t}")
    whole = float(lo).is_integer() and float(hi).is_integer()
    if total <= 0 or (clamp and t >= total):
        v = hi
    elif exact and root == 1 and whole:
        v = int(lo) + t * (int(hi) - int(lo)) // total
    else:
        v = math.floor((float(t) / total) ** (1.0 / root) * (hi - lo) + lo)
    v = math.floor(v)
    v -= v % multiple
    if v < lo:
        v = math.ceil(lo / multiple) * multiple
    v = min(v, hi)
    return int(v) if whole else v
