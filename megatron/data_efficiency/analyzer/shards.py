"""Map-phase bookkeeping: shard plans, resumable shard files, lock-step progress reports.

Shards are fixed ranges of units (or sample ids) that do not depend on the number of ranks,
so a job killed and restarted with any rank count reuses every shard already finished.
Each rank takes a contiguous block of shards.
"""

from __future__ import annotations

import os
import sys
import time
import zipfile  # noqa: F401  np.savez / np.load(.npz) import it lazily: keep that out of the first shard
from typing import Callable

import numpy as np

from megatron.data_efficiency.analyzer.comm import Comm
from megatron.data_efficiency.analyzer.kernels import sorted_unique


class ShardLimitReached(RuntimeError):
    """Raised by the ``fail_after_shards`` test hook to simulate a job killed mid-map."""


def plan_unit_shards(bounds: np.ndarray, shard_tokens: int) -> np.ndarray:
    """Unit boundaries of shards of about ``shard_tokens`` tokens each.

    Args:
        bounds: int64 [U+1] token position of every unit boundary.

    Returns:
        int64 [S+1] increasing unit indices from 0 to U (just [0] when U == 0).
    """
    units = len(bounds) - 1
    total = int(bounds[-1] - bounds[0]) if units else 0
    targets = bounds[0] + np.arange(1, max(1, -(-total // shard_tokens)), dtype=np.int64) * shard_tokens
    cuts = np.searchsorted(bounds, targets, side="left")
    return sorted_unique(np.concatenate(([0], cuts, [units])).astype(np.int64))  # np.unique loads numpy.ma


def plan_range_shards(n: int, per_shard: int) -> np.ndarray:
    """Boundaries [S+1] of shards of ``per_shard`` ids over 0..n-1."""
    return sorted_unique(np.append(np.arange(0, n, max(1, per_shard), dtype=np.int64), n))


def my_block(comm: Comm, num_shards: int) -> range:
    """The contiguous block of shard numbers this rank owns (equal shard counts)."""
    return range(comm.rank * num_shards // comm.size, (comm.rank + 1) * num_shards // comm.size)


def my_weighted_block(comm: Comm, weights: np.ndarray) -> range:
    """The contiguous block of shards this rank owns, balanced by ``weights`` (tokens per shard).

    Block boundaries are the shard boundaries nearest to r/P of the total weight, so a rank
    does at most 1/P of the work plus half a shard either side, whatever S mod P (equal
    shard counts would give some ranks a whole extra shard). Shards themselves do not depend
    on P, so resuming with another rank count still reuses them.

    Args:
        weights: int64 [S] work of every shard.
    """
    cum = np.concatenate(([0], np.cumsum(np.asarray(weights, dtype=np.int64))))
    targets = np.arange(comm.size + 1, dtype=np.int64) * int(cum[-1]) // comm.size
    hi = np.searchsorted(cum, targets, side="left")          # first boundary >= target
    lo = np.maximum(hi - 1, 0)
    ends = np.where(targets - cum[lo] < cum[hi] - targets, lo, hi)
    ends[0], ends[-1] = 0, len(weights)
    ends = np.maximum.accumulate(ends)
    return range(int(ends[comm.rank]), int(ends[comm.rank + 1]))


class ShardStore:
    """Shard results as ``folder/<name>.npz``, written under a temp name then renamed."""

    def __init__(self, folder: str, fail_after: int | None = None) -> None:
        self.folder = folder
        self.computed = 0
        self.reused = 0
        self._fail_after = fail_after

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name + ".npz")

    def get(self, name: str, compute: Callable[[], dict]) -> dict:
        """Load shard ``name`` if finished earlier, else compute and save it.

        Files are uncompressed (zlib costs more than the pass itself); a token-count shard
        is vocab * 8 bytes, about 2% of its 16M tokens of uint16 data.
        """
        path = self.path(name)
        if os.path.isfile(path):
            with np.load(path) as z:
                self.reused += 1
                return {k: z[k] for k in z.files}
        if self._fail_after is not None and self.computed >= self._fail_after:
            raise ShardLimitReached(f"stopped after {self.computed} new shards (fail_after_shards)")
        arrays = compute()
        tmp = f"{path}.tmp{os.getpid()}.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        self.computed += 1
        return arrays


class Progress:
    """Rank 0 prints tokens done (summed over ranks), rate and ETA, at most every ``every`` s."""

    def __init__(self, comm: Comm, label: str, total_tokens: int, enabled: bool = True,
                 every: float = 2.0) -> None:
        self.comm, self.label, self.total = comm, label, max(int(total_tokens), 1)
        self.enabled, self.every = enabled, every
        self.t0 = self.last = time.perf_counter()

    def update(self, done_here: int, final: bool = False) -> None:
        """Collective: every rank calls it once per round with its own running total."""
        done = self.comm.allreduce_sum(int(done_here))
        now = time.perf_counter()
        if not self.enabled or self.comm.rank != 0 or (not final and now - self.last < self.every):
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        print(f"[analyzer] {self.label}: {done:,}/{self.total:,} tokens "
              f"({100.0 * done / self.total:.1f}%), {rate / 1e6:.1f} M tokens/s, "
              f"ETA {eta:.0f} s", file=sys.stderr, flush=True)


def run_rounds(comm: Comm, shard_ids: range, work: Callable[[int], int], progress: Progress) -> None:
    """Run ``work(shard)`` over this rank's shards in lock-step rounds, reporting progress.

    ``work`` returns the tokens the shard covered. With progress enabled, ranks with fewer
    shards take part in the remaining rounds' progress reduction with nothing to do;
    ``progress.enabled`` must be the same on every rank.
    """
    if not progress.enabled:
        # No reports, so no lock-step: a collective per shard would make every round wait
        # for the slowest rank's shard (the sum of per-round maxima instead of the maximum).
        for s in shard_ids:
            work(s)
        return
    rounds = comm.allreduce_max(len(shard_ids))
    done = 0
    for t in range(rounds):
        if t < len(shard_ids):
            done += work(shard_ids[t])
        progress.update(done, final=t == rounds - 1)
