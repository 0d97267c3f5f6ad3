"""Curriculum sampler: draws each global batch from the samples easy enough for the step.

Semantics follow DeepSpeed's data sampler, without its cluster files and broadcast:

* Each sampling metric has an analyzer index. The difficulty in force at a step is the
  step plan's (``StepPlanner.difficulties``, handed in as ``difficulties``): the sampler
  evaluates no pacing function of its own, so it and the plan agree by construction. A
  difficulty admits a prefix of the metric's ``sorted_samples``
  (``clusters.prefix_length``). Admitted samples stay admitted (prefixes only grow), as
  DeepSpeed never drops a cluster.
  With several metrics a sample must be admitted by all of them.
* Whenever the admitted set grows, the new samples form a cluster. Each slot of a global
  batch goes to a cluster with probability proportional to the cluster's size (iid per
  slot, so the batch order is already shuffled); inside a cluster the ids come in a
  shuffled order without replacement, reshuffled when used up (``clusters.py``).
* Every rank computes the same global batch from the seed, the step, the plan's
  difficulties and the small state, so no broadcast is needed and every pipeline stage
  and DP rank can build it. This DP rank's micro-batches follow Megatron's order:
  micro-batch ``m`` of rank ``r`` is ``global[m*mbs*dp + r*mbs : m*mbs*dp + (r+1)*mbs]``
  (disjoint, union = global batch).
* A ``percentile_window`` metric admits a band ``[window_low, difficulty]`` of
  percentiles instead of a prefix: the low edge is fixed for the run and the scheduled
  difficulty is the high edge, so pruning is a curriculum whose window never moves
  (``min_difficulty == max_difficulty``) and a scheduled window only grows upwards.
* Nothing is ever written; the indexes are only read (memory-mapped).

Steps are 1-based (DeepSpeed's): the first global batch is step 1. Global batch ``k`` is
drawn for the loop's 0-based iteration ``k - 1``, the number of batches drawn before it,
and takes that iteration's plan difficulties.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from megatron.core.parallel_state import parallel_layout_problems

from megatron.data_efficiency.curriculum import permutation as perm
from megatron.data_efficiency.curriculum.clusters import (ClusterStreams, MetricIndexLike,
                                                          prefix_length, window_start)

__all__ = ["SamplerMetric", "CurriculumSampler", "Difficulties", "prefix_length",
           "MetricIndexLike"]

# The step plan's difficulties of a 0-based iteration: metric name -> difficulty in force
# (``StepPlanner.difficulties``; it holds at least the sampler's metrics).
Difficulties = Callable[[int], Mapping[str, float]]


@dataclass
class SamplerMetric:
    """One metric the sampler filters on.

    Attributes:
        max_difficulty: the metric's ``max_difficulty`` (DeepSpeed's percentile scale).
    """
    name: str
    index: MetricIndexLike
    difficulty_type: str            # "value" | "percentile" | "percentile_window"
    max_difficulty: float = 100
    window_low: float | None = None     # percentile_window: the band's fixed low edge

    @property
    def percent_scale(self) -> float:
        """What a percentile is a fraction of: DeepSpeed's ``max_difficulty`` for
        ``percentile``; 100 for a window, whose edges are plain percentiles."""
        return 100 if self.difficulty_type == "percentile_window" else self.max_difficulty

    def low_position(self) -> int:
        """First admitted position of the sorted order (0 unless a window)."""
        return window_start(self.index, self.window_low, self.percent_scale)


class CurriculumSampler:
    """Megatron-style batch sampler: yields this rank's micro-batches of sample ids.

    Args:
        metrics: the sampling metrics (all indexes over the same ``N`` samples).
        difficulties: the step plan's difficulties per 0-based iteration
            (``StepPlanner.difficulties``); the only source of the thresholds.
        global_batch_size: samples per optimizer step (all DP ranks and micro-batches).
        micro_batch_size: samples per micro-batch per rank.
        data_parallel_rank, data_parallel_size: this rank's DP coordinates (pipeline and
            tensor ranks do not matter: every stage draws the same batches).
        seed: shared by all ranks.
        history: steps of state kept so that ``state_dict(steps_consumed)`` can rewind
            past batches a data loader fetched ahead.
        buffer_size: ids buffered per cluster.
        first_step: global batches the training loop has already run (its iteration);
            the next batch drawn is for step ``first_step + 1``. ``load_state_dict``
            sets it from a checkpoint instead.
    """

    def __init__(self, metrics: Sequence[SamplerMetric], difficulties: Difficulties,
                 global_batch_size: int, micro_batch_size: int, data_parallel_rank: int = 0,
                 data_parallel_size: int = 1, seed: int = 1234, history: int = 256,
                 buffer_size: int = 4096, first_step: int = 0):
        if not metrics:
            raise ValueError("CurriculumSampler needs at least one metric with an index")
        sizes = {m.name: int(m.index.num_samples) for m in metrics}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"curriculum metric indexes disagree on the number of "
                             f"samples: {sizes}")
        for m in metrics:
            _check_metric(m)
        problems, _ = parallel_layout_problems(data_parallel_size, 1, 1,
                                               global_batch_size=global_batch_size,
                                               micro_batch_size=micro_batch_size)
        if problems:
            raise ValueError("curriculum sampler: " + "; ".join(problems))
        per_step = micro_batch_size * data_parallel_size
        if not 0 <= data_parallel_rank < data_parallel_size:
            raise ValueError(f"data-parallel rank {data_parallel_rank} outside "
                             f"0..{data_parallel_size - 1}")
        self.metrics = list(metrics)
        self.difficulties = difficulties
        self.num_samples = next(iter(sizes.values()))
        self.global_batch_size = global_batch_size
        self.micro_batch_size = micro_batch_size
        self.dp_rank, self.dp_size = data_parallel_rank, data_parallel_size
        self.num_micro_batches = global_batch_size // per_step
        self.seed = int(seed)
        self._lows = [m.low_position() for m in metrics]
        self._streams = ClusterStreams([m.index for m in metrics], self.seed, buffer_size,
                                       self._lows)
        self._history: collections.deque = collections.deque(maxlen=history)
        self._batches: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self.step = int(first_step)                      # last step drawn (1-based)
        self.current_difficulties: dict[str, float] = {}
        self._ends = list(self._lows)                    # admitted band's end per metric
        self._end_cache: dict[int, tuple[float, int]] = {}

    @property
    def num_clusters(self) -> int:
        return len(self._streams.defs)

    @property
    def admitted_samples(self) -> int:
        """Samples eligible so far (the union of all clusters)."""
        cum = self._streams.cum
        return int(cum[-1]) if len(cum) else 0

    # -- stepping ------------------------------------------------------------------
    def _advance_difficulties(self, iteration: int) -> None:
        """Admit what the plan's difficulties of ``iteration`` admit."""
        planned = self.difficulties(iteration)
        ends = list(self._ends)
        for i, m in enumerate(self.metrics):
            d = planned[m.name]
            self.current_difficulties[m.name] = d
            cached = self._end_cache.get(i)
            if cached is None or cached[0] != d:
                cached = (d, prefix_length(m.index, m.difficulty_type, d, m.percent_scale))
                self._end_cache[i] = cached
            ends[i] = max(ends[i], cached[1])
        if ends != self._ends:
            self._streams.add(self._ends, ends)
            self._ends = ends

    def next_global_batch(self) -> np.ndarray:
        """Advance one step and return its whole global batch.       # [GBS] int64 ids"""
        self._history.append(self._snapshot())
        step = self.step + 1
        self._advance_difficulties(self.step)      # batch ``step`` is iteration ``step - 1``
        batch = self._draw(step, perm.derive_key(self.seed, 0xBA7C, step),
                           self.global_batch_size)
        self.step = step
        self._batches[step] = batch
        while len(self._batches) > self._history.maxlen:
            self._batches.popitem(last=False)
        return batch

    def _draw(self, step: int, key: int, count: int) -> np.ndarray:
        """``count`` ids: each slot goes to a cluster in proportion to its size, then
        takes that cluster's next id.                                  # [count] int64"""
        cum = self._streams.cum
        if not len(cum):
            raise RuntimeError(
                f"curriculum step {step}: no sample is admitted at difficulties "
                f"{self.current_difficulties} (min_difficulty below every metric value?)")
        slots = np.searchsorted(cum, perm.uniform_ints(key, count, int(cum[-1])), side="right")
        return self._streams.take(slots)

    def draw(self, iteration: int, count: int, draw: int) -> np.ndarray:
        """``count`` ids drawn at the plan's difficulties of ``iteration`` (0-based), the
        ``draw``-th draw of that step: the token-budget packing takes as many samples a
        step as its units hold (``dynamic_batching.stream``), from the same clusters and
        slot rule as ``next_global_batch``.                            # [count] int64"""
        self._advance_difficulties(iteration)
        step = iteration + 1                    # 1-based, as ``next_global_batch``'s
        return self._draw(step, perm.derive_key(self.seed, 0xD7BA, step, draw), count)

    def global_batch(self, step: int) -> np.ndarray | None:
        """The global batch drawn for 1-based ``step``, if still kept (the last
        ``history`` steps), else None.                                  # [GBS] int64 ids"""
        return self._batches.get(step)

    def micro_batch_ids(self, step: int, microbatch: int) -> list[int] | None:
        """This rank's ids of micro-batch ``microbatch`` of ``step`` (None: not kept)."""
        batch = self.global_batch(step)
        return None if batch is None else self.micro_batches(batch)[microbatch]

    def micro_batches(self, batch: np.ndarray) -> list[list[int]]:
        """This rank's micro-batches of a global batch, in Megatron's order."""
        mbs, dp, r = self.micro_batch_size, self.dp_size, self.dp_rank
        return [batch[m * mbs * dp + r * mbs: m * mbs * dp + (r + 1) * mbs].tolist()
                for m in range(self.num_micro_batches)]

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            yield from self.micro_batches(self.next_global_batch())

    def metric_values(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """Metric value of each id, per metric (for the sampled-difficulty histogram)."""
        ids = np.asarray(ids)
        return {m.name: np.asarray(m.index.sample_to_metric[ids]) for m in self.metrics}

    # -- state ---------------------------------------------------------------------
    def _snapshot(self) -> tuple:
        return (self.step, list(self._ends), dict(self.current_difficulties),
                self._streams.snapshot())

    def snapshot(self) -> tuple:
        """A cheap copy of the state now (``state_of`` makes it a ``state_dict``)."""
        return self._snapshot()

    def state_dict(self, steps_consumed: int | None = None) -> dict[str, Any]:
        """Small, JSON-able state; resuming from it draws exactly the same ids.

        Args:
            steps_consumed: global batches the training loop really used. A data loader
                may have drawn ahead; the state is rewound to that step (kept for the
                last ``history`` steps). ``None``: the sampler's own step.
        """
        snap = self._snapshot()
        if steps_consumed is not None and steps_consumed != self.step:
            found = [s for s in self._history if s[0] == steps_consumed]
            if not found:
                raise ValueError(f"curriculum sampler: state of step {steps_consumed} is not "
                                 f"kept (sampler at step {self.step}, "
                                 f"{len(self._history)} steps of history)")
            snap = found[0]
        return self.state_of(snap)

    def state_of(self, snap: tuple) -> dict[str, Any]:
        """The ``state_dict`` of a ``snapshot()``."""
        step, ends, diffs, streams = snap
        return {"version": 2, "seed": self.seed, "num_samples": self.num_samples,
                "metrics": [m.name for m in self.metrics], "lows": list(self._lows),
                "step": step, "ends": ends,
                "difficulties": diffs, "clusters": self._streams.state_dict(streams)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``; the seed, metrics and sample count must match."""
        mine = (self.seed, self.num_samples, [m.name for m in self.metrics])
        theirs = (state["seed"], state["num_samples"], list(state["metrics"]))
        if mine != theirs:
            raise ValueError(f"curriculum sampler checkpoint does not match this run: "
                             f"(seed, num_samples, metrics) is {theirs} there, {mine} here")
        lows = [int(x) for x in state.get("lows", [0] * len(self.metrics))]
        if lows != self._lows:
            raise ValueError(f"curriculum sampler checkpoint does not match this run: its "
                             f"difficulty windows start at sorted positions {lows}, this "
                             f"run's at {self._lows} (window_low changed?)")
        self.step = int(state["step"])
        self._ends = [int(e) for e in state["ends"]]
        self.current_difficulties = dict(state["difficulties"])
        self._end_cache = {}
        self._streams.load_state_dict(state["clusters"])
        self._history.clear()
        self._batches.clear()


def _check_metric(m: SamplerMetric) -> None:
    if m.difficulty_type not in ("value", "percentile", "percentile_window"):
        raise ValueError(f"curriculum metric {m.name}: difficulty_type must be 'value', "
                         f"'percentile' or 'percentile_window', got {m.difficulty_type!r}")
    if (m.window_low is not None) != (m.difficulty_type == "percentile_window"):
        raise ValueError(f"curriculum metric {m.name}: window_low goes with (and only with) "
                         f"difficulty_type 'percentile_window'")
