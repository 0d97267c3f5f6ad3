"""The paper's low-cost tuning (section 3.3), as pure functions: binary-search the smallest
start (``d_s`` / ``r_s``) and then the largest duration (``T_c`` / ``T_r``) whose short trial
run keeps the validation perplexity within ``ratio`` (1.3) of the best value seen so far."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


def is_stable(perplexities: Sequence[float], ratio: float = 1.3) -> bool:
    """True when no validation perplexity exceeds ``ratio`` x the lowest one before it
    (the paper's sign of a harmful setting); a NaN/inf perplexity is never stable."""
    best = math.inf
    for ppl in perplexities:
        if not math.isfinite(ppl) or ppl > ratio * best:
            return False
        best = min(best, ppl)
    return bool(perplexities)


def smallest_passing(candidates: Sequence[T], passes: Callable[[T], bool]) -> T | None:
    """The smallest candidate (ascending list) that passes, assuming every larger one
    passes too; None if none does. Calls ``passes`` about log2(len) times."""
    lo, hi, best = 0, len(candidates) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        if passes(candidates[mid]):
            best, hi = candidates[mid], mid - 1
        else:
            lo = mid + 1
    return best


def max_calls(n: int) -> int:
    """The most ``passes`` calls a binary search over ``n`` candidates makes."""
    return max(0, int(n)).bit_length()


def max_trials(num_starts: int, num_durations: int) -> int:
    """The most trial runs ``tune`` makes: one search over the starts, one over the
    durations (the default duration among them)."""
    return max_calls(num_starts) + max_calls(num_durations)


def separated(trials: Sequence["Trial"], rel: float = 1e-9) -> bool:
    """False when two or more trials all gave the same validation perplexities (within
    ``rel``): the trials were too short for the settings to make any difference, so their
    verdicts carry no signal."""
    curves = [t.perplexities for t in trials]
    if len(curves) < 2:
        return True
    first = curves[0]
    return not all(len(c) == len(first) and all(math.isclose(a, b, rel_tol=rel)
                                                for a, b in zip(c, first)) for c in curves[1:])


def largest_passing(candidates: Sequence[T], passes: Callable[[T], bool]) -> T | None:
    """The largest candidate (ascending list) that passes, assuming every smaller one
    passes too; None if none does."""
    return smallest_passing(candidates[::-1], passes)


@dataclass
class Trial:
    start: float
    duration: float
    perplexities: list[float]
    stable: bool


@dataclass
class TuningResult:
    """``start`` / ``duration`` are None when no candidate passed."""
    start: float | None
    duration: float | None
    trials: list[Trial] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"start": self.start, "duration": self.duration,
                "trials": [asdict(t) for t in self.trials]}


def tune(trial_perplexities: Callable[[float, float], Sequence[float]],
         starts: Sequence[float], durations: Sequence[float], default_duration: float,
         ratio: float = 1.3) -> TuningResult:
    """Search the start with the duration at its default, then the duration with that start.

    Args:
        trial_perplexities: ``fn(start, duration) -> validation perplexities`` of one short
            trial run (evaluated in order).
        starts: ascending candidate starts (smaller = more saving, less stable).
        durations: ascending candidate durations (larger = more saving, less stable).
        default_duration: the duration used while searching the start.
        ratio: the stability bound.
    """
    result = TuningResult(None, None)
    seen: dict[tuple[float, float], Trial] = {}

    def passes(start: float, duration: float) -> bool:
        key = (start, duration)
        if key not in seen:
            ppl = [float(p) for p in trial_perplexities(start, duration)]
            seen[key] = Trial(start, duration, ppl, is_stable(ppl, ratio))
            result.trials.append(seen[key])
        return seen[key].stable

    result.start = smallest_passing(list(starts), lambda s: passes(s, default_duration))
    if result.start is None:
        return result
    grid = sorted(set(durations) | {default_duration})
    result.duration = largest_passing(grid, lambda d: passes(result.start, d))
    return result
