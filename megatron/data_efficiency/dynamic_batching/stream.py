"""Token-budget batches composed with a curriculum: the curriculum decides which samples,
the packing packs them, one step after another.

DeepSpeed has no such composition (its variable-batch helper packs the whole dataset
once and is a separate path from its curriculum sampler); this is the project's design.
For step ``k`` (0-based) ``CurriculumPacking`` takes the samples in the curriculum's draw
order (``Draws``: the curriculum sampler's difficulty-bounded, seeded draws at step
``k``'s difficulties, or the dataset's order when the curriculum only truncates) and packs
them greedily into units of at most ``max_tokens`` (and ``min/max_batch_size`` samples)
until the step has ``units_per_batch`` (the global batch size) units. A sample's length is
its ``seqlen`` metric, under a truncation curriculum (seqtru) at most the step's length.

* A unit is closed when its next sample does not fit (that sample starts the next unit)
  or when it holds ``max_batch_size`` samples; the sample that does not fit the step's
  last unit is the first sample of the next step (carried, never dropped).
* A sample longer than ``max_tokens`` alone is left out (as DeepSpeed does); a unit that
  must close below ``min_batch_size`` samples is left out with its samples (DeepSpeed
  stops packing there instead; a stream has no end to stop at).
* Samples are drawn only as they are needed: with ``R`` units still to fill, ``R`` more
  (each unit holds at least one), so a step draws nothing it does not pack except the
  one sample it carries.

The plan of step ``k`` depends on the draws of the steps before it, so the packing is
stateful: steps are packed exactly once, in order, and kept for the loop and the
prefetching sampler to read (``step_batch``); ``state_dict(k)`` is the state before step
``k`` was packed (a loader may have packed ahead), which a checkpoint saves so a resumed
run packs the same steps. Every data-parallel rank runs the same packing from the same
seed and takes its share of the step (``TokenBatches.microbatch``).
"""
from __future__ import annotations

import collections
import hashlib
from typing import Any, Callable, Protocol

import numpy as np

from megatron.data_efficiency.dynamic_batching.config import DynamicBatchingConfig
from megatron.data_efficiency.dynamic_batching.packing import BatchLR, TokenBatches
from megatron.data_efficiency.dynamic_batching.plan import StepBatch

_MAX_LEFT_OUT = 100_000   # samples left out in one step before the step is called unpackable


class Draws(Protocol):
    """The curriculum's order of eligible samples (``CurriculumSampler.draw``)."""

    def draw(self, iteration: int, count: int, draw: int) -> np.ndarray: ...

    def snapshot(self) -> Any: ...            # a cheap copy of the state now

    def state_of(self, snapshot: Any) -> dict[str, Any]: ...   # its JSON-able state

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class DatasetOrder:
    """The dataset's own order, pass after pass (Megatron's sampler): the draws of a
    curriculum that only truncates (seqtru) and samples nothing."""

    def __init__(self, num_samples: int) -> None:
        self.num_samples = int(num_samples)
        self.position = 0

    def draw(self, iteration: int, count: int, draw: int) -> np.ndarray:
        ids = np.arange(self.position, self.position + count, dtype=np.int64) % self.num_samples
        self.position += count
        return ids

    def snapshot(self) -> int:
        return self.position

    def state_of(self, snapshot: int) -> dict[str, Any]:
        return {"position": int(snapshot)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])


class CurriculumPacking:
    """The token-budget batch of every step, packed in order from the curriculum's draws.

    Args:
        config: the ``dynamic_batching`` settings (``max_tokens``, batch size bounds,
            ``lr_scaling_method``).
        seqlens: [N] int64, the ``seqlen`` metric of every training sample.
        draws: the curriculum's draw order (``CurriculumSampler`` or ``DatasetOrder``).
        length_cap: ``fn(iteration) -> int | None``: the truncation curriculum's length
            of the step (None: samples are not truncated).
        units_per_batch: units a step (the global batch size).
        seq_length: ``--seq-length``.
        sample_limit: most samples the run's steps may draw (``num_epochs`` passes; None:
            any), checked for the steps before ``train_iters`` (a prefetching loader packs
            a few steps past the run's end, which are never trained).
        history: steps of state kept for ``state_dict`` (a loader prefetches far fewer).
        log: rank 0's print: with ``verbose``, one line per step as it is packed.
        first_step: the step packed first (the loop's iteration; a checkpoint's state,
            ``load_state_dict``, positions it instead): draws start afresh there.
    """

    def __init__(self, config: DynamicBatchingConfig, seqlens: np.ndarray, draws: Draws,
                 length_cap: Callable[[int], int | None], units_per_batch: int,
                 seq_length: int, sample_limit: int | None = None, history: int = 256,
                 log: Callable[[str], None] | None = None, first_step: int = 0,
                 train_iters: int | None = None) -> None:
        self.config = config
        self.seqlens = np.asarray(seqlens, dtype=np.int64)
        self.draws = draws
        self.length_cap = length_cap
        self.units_per_batch = int(units_per_batch)
        self.seq_length = int(seq_length)
        self.sample_limit = sample_limit
        self.train_iters = train_iters
        self.next_step = int(first_step)      # the step packed next
        self.carried: int | None = None       # the first sample of the next step
        self.drawn = 0                        # samples drawn so far
        self._batches: collections.OrderedDict[int, StepBatch] = collections.OrderedDict()
        self._states: collections.OrderedDict[int, tuple] = collections.OrderedDict()
        self._history = history
        self.log = log

    def fingerprint(self) -> str:
        """A hash of what the packing reads besides the curriculum (the seqlen metric, the
        packing bounds, the step's units); the curriculum is in the run record."""
        h = hashlib.sha256(np.ascontiguousarray(self.seqlens).tobytes())
        c = self.config
        h.update(repr(("stream", c.max_tokens, c.min_batch_size, c.max_batch_size,
                       self.units_per_batch)).encode())
        return h.hexdigest()[:16]

    def step_batch(self, iteration: int) -> StepBatch:
        """Step ``iteration``'s batch: packed now if it is the next step, else the kept one.

        Raises:
            RuntimeError: a step ahead of the next one, or one no longer kept.
        """
        found = self._batches.get(iteration)
        if found is not None:
            return found
        if iteration != self.next_step:
            raise RuntimeError(f"dynamic batching with a curriculum packs steps in order: "
                               f"step {iteration + 1} asked, step {self.next_step + 1} is next "
                               f"(the last {self._history} are kept)")
        self._states[iteration] = self._state()
        batch = self._pack(iteration)
        self._batches[iteration] = batch
        self.next_step += 1
        for kept in (self._batches, self._states):
            while len(kept) > self._history:
                kept.popitem(last=False)
        return batch

    def _take(self, iteration: int, count: int, draw: int) -> list[int]:
        self.drawn += count
        trained = self.train_iters is None or iteration < self.train_iters
        if self.sample_limit is not None and trained and self.drawn > self.sample_limit:
            from megatron.errors import BadConfigError
            raise BadConfigError(
                f"data_efficiency.data_sampling.num_epochs: step {iteration + 1} draws sample "
                f"{self.drawn} of the run, past the {self.sample_limit} that num_epochs passes "
                f"over the training samples hold; raise num_epochs or shorten the run")
        return self.draws.draw(iteration, count, draw).tolist()

    def _pack(self, iteration: int) -> StepBatch:
        c, units_wanted = self.config, self.units_per_batch
        cap = self.length_cap(iteration)
        low, high = max(1, c.min_batch_size or 0), c.max_batch_size or None
        buffer = collections.deque([] if self.carried is None else [self.carried])
        units: list[list[int]] = []
        unit: list[int] = []
        tokens = draws = 0
        left_out: list[int] = []
        while len(units) < units_wanted:
            if not buffer:
                buffer.extend(self._take(iteration, units_wanted - len(units), draws))
                draws += 1
            sample = buffer[0]
            n = int(self.seqlens[sample]) if cap is None else min(int(self.seqlens[sample]), cap)
            if n > c.max_tokens:
                left_out.append(buffer.popleft())
            elif unit and tokens + n > c.max_tokens:      # closes the unit; starts the next
                if len(unit) >= low:
                    units.append(unit)
                else:
                    left_out.extend(unit)
                unit, tokens = [], 0
            else:
                unit.append(buffer.popleft())
                tokens += n
                if high is not None and len(unit) == high:
                    units.append(unit)
                    unit, tokens = [], 0
            if len(left_out) > _MAX_LEFT_OUT:
                raise RuntimeError(
                    f"dynamic batching: step {iteration + 1} left out {len(left_out)} samples "
                    f"without filling its units: the samples the curriculum admits do not pack "
                    f"into units of at most {c.max_tokens} tokens (max_tokens, "
                    f"min_batch_size {c.min_batch_size})")
        if len(buffer) > 1:     # each draw is at most the units left to fill
            raise RuntimeError(f"dynamic batching: step {iteration + 1} drew {len(buffer) - 1} "
                               f"samples it did not pack")
        self.carried = buffer[0] if buffer else None
        ids = np.asarray([s for u in units for s in u], dtype=np.int64)
        lens = np.minimum(self.seqlens[ids], cap) if cap is not None else self.seqlens[ids]
        offsets = np.cumsum([0] + [len(u) for u in units], dtype=np.int64)
        batches = TokenBatches(sample_ids=ids, seqlens=lens, unit_offsets=offsets,
                               units_per_batch=units_wanted,
                               left_out=np.asarray(left_out, dtype=np.int64), unpacked=0)
        lr = BatchLR(c.lr_scaling_method, units_wanted, len(ids))
        if c.verbose and self.log is not None:
            self.log(f" > dynamic batching: step {iteration + 1}: {len(ids)} samples, "
                     f"{int(lens.sum())} tokens (truncated to {cap}), samples per unit "
                     f"{[len(u) for u in units]}, {len(left_out)} left out, ids {ids.tolist()}")
        return StepBatch(batches, 0, lr, self.seq_length, truncate=cap)

    # -- state ---------------------------------------------------------------------------
    def _state(self) -> tuple:
        return self.next_step, self.carried, self.drawn, self.draws.snapshot()

    def state_dict(self, steps_consumed: int) -> dict:
        """The state before step ``steps_consumed`` was packed (JSON-able).

        Raises:
            ValueError: that step's state is no longer kept.
        """
        found = (self._state() if steps_consumed == self.next_step
                 else self._states.get(steps_consumed))
        if found is None:
            raise ValueError(f"dynamic batching: the packing's state before step "
                             f"{steps_consumed + 1} is not kept (next step "
                             f"{self.next_step + 1}, {len(self._states)} steps kept)")
        step, carried, drawn, draws = found
        return {"step": step, "carried": carried, "drawn": drawn,
                "draws": self.draws.state_of(draws)}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state_dict(k)``: step ``k`` is packed next."""
        self.next_step = int(state["step"])
        self.carried = None if state["carried"] is None else int(state["carried"])
        self.drawn = int(state["drawn"])
        self.draws.load_state_dict(state["draws"])
        self._batches.clear()
        self._states.clear()
