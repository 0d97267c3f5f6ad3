"""Small helpers shared by the curriculum tests."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from megatron.data_efficiency.curriculum.sampler import CurriculumSampler, SamplerMetric
from megatron.data_efficiency.curriculum.scheduler import CurriculumScheduler, ScheduleConfig


def memory_index(values: np.ndarray) -> SimpleNamespace:
    """An in-memory stand-in for ``index_io.MetricIndex`` built by brute force."""
    values = np.asarray(values)
    order = np.lexsort((np.arange(len(values)), values)).astype(np.int64)
    sv = values[order]
    starts = np.flatnonzero(np.r_[True, sv[1:] != sv[:-1]])
    return SimpleNamespace(sample_to_metric=values, sorted_samples=order, values=sv[starts],
                           offsets=np.r_[starts, len(values)].astype(np.int64),
                           num_samples=len(values))


def linear(d_min: float, d_max: float, total: int, step: int = 1) -> CurriculumScheduler:
    return CurriculumScheduler(ScheduleConfig("fixed_linear", d_min, d_max,
                                              total_curriculum_step=total,
                                              difficulty_step=step))


def admitted_end(values: np.ndarray, difficulty_type: str, d: float) -> np.ndarray:
    """Brute force: boolean [N] of samples admitted at difficulty d."""
    n = len(values)
    if difficulty_type == "value":
        return values <= d
    rank = np.empty(n, dtype=np.int64)
    rank[np.lexsort((np.arange(n), values))] = np.arange(n)
    return rank < (n * int(d)) // 100


def paced(schedulers: dict[str, CurriculumScheduler]):
    """The difficulties a step planner with these schedules gives each 0-based iteration
    (``StepPlanner.difficulties``: curriculum step = iteration + 1)."""
    return lambda iteration: {name: s.difficulty_at(iteration + 1)
                              for name, s in schedulers.items()}


def paced_sampler(specs, *args, **kw) -> CurriculumSampler:
    """A sampler over specs (name, index, difficulty_type, scheduler[, window_low]) that
    draws from the difficulties those schedules give (``paced``)."""
    metrics = [SamplerMetric(name, index, t, sched.config.max_difficulty, *low)
               for name, index, t, sched, *low in specs]
    return CurriculumSampler(metrics, paced({spec[0]: spec[3] for spec in specs}), *args, **kw)


def sampler(specs, gbs=32, mbs=2, dp_rank=0, dp_size=2, seed=7, **kw) -> CurriculumSampler:
    """specs: list of (name, values, difficulty_type, (d_min, d_max, total_steps, step)),
    each paced by a fresh fixed_linear scheduler."""
    return paced_sampler([(name, memory_index(v), t, linear(*pace))
                          for name, v, t, pace in specs],
                         gbs, mbs, dp_rank, dp_size, seed=seed, **kw)
