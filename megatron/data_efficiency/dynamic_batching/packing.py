"""Token-budget batches: DeepSpeed's ``dynamic_batching`` packing and LR scaling.

DeepSpeed 0.19.8 (``runtime/data_pipeline/data_sampling/variable_batch_size_and_lr.py``,
``batch_by_seqlens``) packs a dataset, once, into *packing units* of samples whose summed
lengths (the analyzer's ``seqlen`` metric) stay within ``max_tokens``:

1. the samples are put in the picking order: ``dataloader`` (the dataset's), ``seqlen``
   (ascending ``(seqlen, id)``) or ``random`` (Python's ``random.Random(seed).shuffle``);
2. samples longer than ``max_tokens`` alone are left out (DeepSpeed warns);
3. greedily from the first sample, each unit takes the longest run of the next samples
   with ``min_batch_size <= n <= max_batch_size`` and summed length ``<= max_tokens`` (a
   size of 0 or None is no bound). DeepSpeed's search never reaches the last sample of the
   order, and it stops packing at the first position where no valid unit starts (only
   possible with ``min_batch_size > 1``); both are kept, so that the batches are
   DeepSpeed's (the README's table of differences names them);
4. the units are trimmed to a multiple of ``units_per_batch`` (DeepSpeed's
   ``effective_batch_size``, the engine's ``train_batch_size``: the global batch size)
   and every ``units_per_batch`` consecutive units make one optimizer step's batch.

DeepSpeed's search is quadratic in the dataset; this one is a prefix sum and a binary
search per unit, with the same result.

A step's units are spread over the data-parallel ranks as DeepSpeed's loader does
(``DistributedSampler`` without shuffling, then batches of ``micro_batch_size`` units):
rank ``r``'s micro-batch ``m`` of step ``k`` holds units ``k*E + r + (m*mbs + t)*R`` for
``t < mbs`` (``E`` units a step, ``R`` ranks), their samples concatenated in that order.

The learning rate of a step with ``n`` samples is the schedule's times ``n / E``
(``linear``), ``sqrt(n / E)`` (``sqrt``) or unchanged (``none``): DeepSpeed's reference
batch is ``train_batch_size``, the LR the schedule gives is the LR of ``E`` samples.
"""
from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass

import numpy as np

PICKING_ORDERS = ("dataloader", "seqlen", "random")
LR_SCALING_METHODS = ("linear", "sqrt", "none")


def picking_order(seqlens: np.ndarray, ids: np.ndarray, order: str, seed: int) -> np.ndarray:
    """Positions into ``ids`` in DeepSpeed's picking order.

    ``random`` shuffles with Python's ``random.Random(seed)`` as DeepSpeed does: its swaps
    depend only on the length and the generator, so shuffling positions gives DeepSpeed's
    permutation of ``(seqlen, id)`` pairs.
    """
    n = len(ids)
    if order == "dataloader":
        return np.arange(n, dtype=np.int64)
    if order == "seqlen":
        return np.lexsort((ids, seqlens)).astype(np.int64)
    if order == "random":
        positions = list(range(n))
        random.Random(seed).shuffle(positions)
        return np.asarray(positions, dtype=np.int64)
    raise ValueError(f"sequence_picking_order {order!r}: expected one of {PICKING_ORDERS}")


def scaled_lr(lr: float, base_batch_size: int, batch_size: int, method: str) -> float:
    """DeepSpeed's ``scale_lr``: the LR of ``batch_size`` samples when ``lr`` is the LR of
    ``base_batch_size`` (same arithmetic, so the same floats)."""
    if method == "linear":
        return lr * batch_size / base_batch_size
    if method == "sqrt":
        return lr * math.sqrt(batch_size / base_batch_size)
    if method == "none":
        return lr
    raise ValueError(f"lr_scaling_method {method!r}: expected one of {LR_SCALING_METHODS}")


@dataclass(frozen=True)
class BatchLR:
    """The LR rule of one step: the schedule's LR scaled from ``base_batch_size`` samples
    to the step's ``batch_size`` with ``method``."""
    method: str
    base_batch_size: int
    batch_size: int

    def __call__(self, lr: float) -> float:
        return scaled_lr(lr, self.base_batch_size, self.batch_size, self.method)


@dataclass(frozen=True)
class TokenBatches:
    """The packed dataset: units of sample ids, ``units_per_batch`` units a step.

    Attributes:
        sample_ids: [S] int64, the samples of every unit, unit after unit.
        seqlens: [S] int64, each of those samples' length (the ``seqlen`` metric).
        unit_offsets: [U+1] int64, unit ``u`` is ``sample_ids[unit_offsets[u]:
            unit_offsets[u+1]]``; ``U`` is a multiple of ``units_per_batch``.
        units_per_batch: units per optimizer step (the global batch size).
        left_out: ids of the samples longer than ``max_tokens``.
        unpacked: samples of the order that no unit holds (DeepSpeed's last sample, the
            tail after a stop, and the units trimmed to a whole step).
    """
    sample_ids: np.ndarray
    seqlens: np.ndarray
    unit_offsets: np.ndarray
    units_per_batch: int
    left_out: np.ndarray
    unpacked: int

    @property
    def num_batches(self) -> int:
        return (len(self.unit_offsets) - 1) // self.units_per_batch

    def span(self, batch: int) -> tuple[int, int]:
        """Where batch ``batch``'s samples are in ``sample_ids``: ``[lo, hi)``."""
        e = self.units_per_batch
        return int(self.unit_offsets[batch * e]), int(self.unit_offsets[(batch + 1) * e])

    def batch_samples(self, batch: int) -> int:
        """Samples of batch ``batch`` (DeepSpeed's ``batch_sizes[batch]``)."""
        lo, hi = self.span(batch)
        return hi - lo

    def batch_tokens(self, batch: int) -> int:
        """Summed ``seqlen`` of batch ``batch``'s samples."""
        lo, hi = self.span(batch)
        return int(self.seqlens[lo:hi].sum())

    def batch_max_seqlen(self, batch: int) -> int:
        """The longest sample of batch ``batch`` (DeepSpeed's ``batch_max_seqlens``)."""
        lo, hi = self.span(batch)
        return int(self.seqlens[lo:hi].max())

    def units(self, batch: int, dp_rank: int, dp_size: int, microbatch: int,
              micro_batch_size: int) -> list[int]:
        """The unit numbers of ``dp_rank``'s micro-batch ``microbatch`` of step ``batch``."""
        first = batch * self.units_per_batch + dp_rank
        return [first + (microbatch * micro_batch_size + t) * dp_size
                for t in range(micro_batch_size)]

    def microbatch(self, batch: int, dp_rank: int, dp_size: int, microbatch: int,
                   micro_batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(sample ids, their lengths) of that micro-batch, its units concatenated."""
        spans = [(int(self.unit_offsets[u]), int(self.unit_offsets[u + 1]))
                 for u in self.units(batch, dp_rank, dp_size, microbatch, micro_batch_size)]
        ids = np.concatenate([self.sample_ids[lo:hi] for lo, hi in spans])
        lens = np.concatenate([self.seqlens[lo:hi] for lo, hi in spans])
        return ids, lens

    def microbatch_ids(self) -> list[list[int]]:
        """Every unit's sample ids (DeepSpeed's ``microbatch_ids`` without batch numbers)."""
        return [self.sample_ids[lo:hi].tolist()
                for lo, hi in zip(self.unit_offsets[:-1], self.unit_offsets[1:])]

    def batch_sizes(self) -> list[int]:
        """Samples of every batch (DeepSpeed's ``batch_sizes``)."""
        return [self.batch_samples(k) for k in range(self.num_batches)]

    def fingerprint(self) -> str:
        """A hash of the packing (what a checkpoint's sampler state is checked against)."""
        h = hashlib.sha256()
        for arr in (self.sample_ids, self.unit_offsets):
            h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
        h.update(str(self.units_per_batch).encode())
        return h.hexdigest()[:16]


def pack(seqlens: np.ndarray, max_tokens: int, units_per_batch: int,
         ids: np.ndarray | None = None, min_batch_size: int | None = 1,
         max_batch_size: int | None = None, order: str = "dataloader",
         seed: int = 1234) -> TokenBatches:
    """Pack samples into token-budget units and steps as DeepSpeed's ``batch_by_seqlens``
    (``required_microbatches_of_same_size`` off: no pipeline).

    Args:
        seqlens: [N] length of every sample of the dataset.
        max_tokens: most summed length of one unit.
        units_per_batch: units per step (DeepSpeed's ``effective_batch_size``).
        ids: the samples to pack, in the dataloader's order (None: all ``N``; DeepSpeed's
            ``dataset_filter_ids``).
        min_batch_size, max_batch_size: bounds on the samples of a unit (0 / None: none).
        order: ``dataloader``, ``seqlen`` or ``random``.
        seed: the ``random`` order's seed (``data_efficiency.seed``).

    Raises:
        ValueError: fewer units than one step (DeepSpeed asserts), or bad arguments.
    """
    seqlens = np.asarray(seqlens, dtype=np.int64)
    ids = np.arange(len(seqlens), dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
    lens = seqlens[ids]
    where = picking_order(lens, ids, order, seed)
    ids, lens = ids[where], lens[where]
    too_long = lens > max_tokens
    left_out = np.sort(ids[too_long])
    ids, lens = ids[~too_long], lens[~too_long]
    n = len(ids)
    ends = np.cumsum(lens)                    # [n] summed length up to and including i
    low = max(1, min_batch_size or 0)
    high = max_batch_size or n
    offsets = [0]
    start = 0
    while start < n:
        base = int(ends[start - 1]) if start else 0
        fits = int(np.searchsorted(ends, base + max_tokens, side="right")) - start
        size = min(fits, high, n - 1 - start)   # DeepSpeed never reaches the last sample
        if size < low:
            break
        start += size
        offsets.append(start)
    units = len(offsets) - 1
    if units < units_per_batch:
        raise ValueError(f"dynamic_batching: the samples pack into {units} units of at most "
                         f"{max_tokens} tokens, fewer than the {units_per_batch} of one step "
                         f"(the global batch size); not enough data for a single batch")
    kept = units - units % units_per_batch
    offsets = np.asarray(offsets[:kept + 1], dtype=np.int64)
    used = int(offsets[-1])
    return TokenBatches(sample_ids=ids[:used].copy(), seqlens=lens[:used].copy(),
                        unit_offsets=offsets, units_per_batch=units_per_batch,
                        left_out=left_out, unpacked=n - used)
