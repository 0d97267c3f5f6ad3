"""Curriculum clusters as shuffled streams, without materialising or writing anything.

A cluster is the set of samples admitted by one growth of the curriculum thresholds. Its
*stream* is the infinite sequence of its members in shuffled order, epoch after epoch:
epoch ``e`` walks ``feistel(0 .. D-1)`` keyed by (seed, cluster, e) and keeps the outputs
``< length`` that are members (``permutation.py``). A stream position is (epoch, counter).

* One metric: the cluster is the slice ``sorted_samples[start : start + length]``, so
  every output below ``length`` is a member.
* A metric with a difficulty window (``percentile_window``) admits the band
  ``sorted_samples[low : end]``: ``low`` is fixed for the run (``ClusterStreams(lows=)``),
  only ``end`` grows, so admitted samples stay admitted and the clusters are as above.
* Several metrics: the cluster is ``{s in sorted_samples_p[:length] : admitted by every
  metric now, not admitted by all before}`` with ``p`` the most selective metric (with
  windows: ``sorted_samples_p[low_p:end_p]``, the narrowest band); the walk over it keeps
  members only, tested through each metric's
  ``sample_to_metric`` and its (value, id) sort key. The size is counted once when the
  cluster is created, by a chunked scan (O(length) time, O(chunk) memory).

To keep a step cheap, each cluster holds a window of the next ``buffer_size`` ids of its
stream; a step gathers from the windows and refills only the ones it exhausts. The
state of a cluster is the stream position of its window's start plus how much of the
window was used: a few integers, from which the window is recomputed exactly on resume.
"""
from __future__ import annotations

import mmap
from typing import Any, Protocol, Sequence

import numpy as np

from megatron.data_efficiency.analyzer.index_io import percentile_prefix, value_end
from megatron.data_efficiency.curriculum import permutation as perm

_CHUNK = 1 << 20     # samples per chunk when counting a multi-metric cluster


class MetricIndexLike(Protocol):
    """What is read of ``analyzer.index_io.MetricIndex`` (memory-mapped arrays)."""
    sample_to_metric: np.ndarray   # [N] value per sample id
    sorted_samples: np.ndarray     # [N] ids sorted by (value, id)
    values: np.ndarray             # [V] distinct values ascending
    offsets: np.ndarray            # [V+1] CSR offsets into sorted_samples
    num_samples: int


def prefix_length(index: MetricIndexLike, difficulty_type: str, difficulty: float,
                  max_difficulty: float = 100) -> int:
    """Samples a difficulty admits, i.e. the prefix ``sorted_samples[:end]``.

    ``value``: every sample with value ``<= difficulty``. ``percentile``: DeepSpeed's
    ``(N // max_difficulty) * difficulty`` lowest samples of the sorted order (ties broken
    by id), all ``N`` at ``max_difficulty``; a percentage is taken exactly as written
    (12.5 is 1/8). ``percentile_window``: the same end; its band starts at
    ``window_start``.
    """
    if difficulty_type == "value":
        return value_end(index.values, index.offsets, difficulty)
    if difficulty_type in ("percentile", "percentile_window"):
        return percentile_prefix(int(index.num_samples), difficulty, max_difficulty)
    raise ValueError(f"difficulty_type must be 'value', 'percentile' or 'percentile_window', "
                     f"got {difficulty_type!r}")


def window_start(index: MetricIndexLike, window_low: float | None,
                 max_difficulty: float = 100) -> int:
    """First position of ``sorted_samples`` a window admits: the samples below the
    ``window_low`` percentile (same arithmetic as ``prefix_length``) are never drawn;
    0 without a window."""
    if window_low is None:
        return 0
    return percentile_prefix(int(index.num_samples), window_low, max_difficulty)


class Boundary:
    """Test ``position of s in sorted order < end`` from s's value and id alone."""

    def __init__(self, index: MetricIndexLike, end: int):
        self.full = end >= index.num_samples
        self.empty = end <= 0
        if not (self.full or self.empty):
            k = int(np.searchsorted(index.offsets, end, side="right")) - 1
            self.value = index.values[k]
            self.sample = int(index.sorted_samples[end])

    def admits(self, values: np.ndarray, ids: np.ndarray) -> np.ndarray:
        if self.full:
            return np.ones(len(ids), dtype=bool)
        if self.empty:
            return np.zeros(len(ids), dtype=bool)
        return (values < self.value) | ((values == self.value) & (ids < self.sample))


def prefault(arr: np.ndarray, start: int, stop: int, limit_bytes: int = 256 << 20) -> None:
    """Map the pages of ``arr[start:stop]`` now if ``arr`` is memory-mapped (best effort).

    A new cluster's ids are read at random; without this the first reads of each page
    fault one by one inside ordinary steps. One ``madvise(MADV_POPULATE_READ)`` (Linux
    5.14+; else ``MADV_WILLNEED``) moves that cost into the step that admits the cluster.
    The pages are file-backed (page cache), not the process's own memory.
    """
    mm = arr
    while mm is not None and not isinstance(mm, mmap.mmap):
        mm = getattr(mm, "base", None)
    if mm is None or stop <= start:
        return
    try:
        base = np.frombuffer(mm, dtype=np.uint8, count=1).ctypes.data
        first = arr[start:start + 1].ctypes.data - base
        length = min((stop - start) * arr.itemsize, limit_bytes)
        page = mmap.PAGESIZE
        lo = first // page * page
        length = min(length + (first - lo), len(mm) - lo)
        for advice in (getattr(mmap, "MADV_POPULATE_READ", 22), mmap.MADV_WILLNEED):
            try:
                mm.madvise(advice, lo, length)
                return
            except OSError:
                continue
    except (AttributeError, ValueError, OSError):
        return      # not a plain mapping (or no madvise here): reads fault lazily instead


class ClusterStreams:
    """Every cluster's definition, id window and stream position.

    Args:
        indexes: the sampling metrics' indexes, all over the same samples.
        seed: shared by all ranks; with the cluster number and epoch it keys the shuffle.
        buffer_size: ids held per cluster (memory: 8 bytes each).
        lows: per index, the fixed first admitted position of its sorted order (a
            difficulty window's lower edge; default 0: a prefix).
    """

    def __init__(self, indexes: Sequence[MetricIndexLike], seed: int, buffer_size: int = 4096,
                 lows: Sequence[int] | None = None):
        self.indexes = list(indexes)
        self.lows = [int(x) for x in lows] if lows is not None else [0] * len(self.indexes)
        self.seed = int(seed)
        self.buffer_size = int(buffer_size)
        self.defs: list[dict[str, Any]] = []
        self._bounds: list[tuple[list[Boundary], list[Boundary]]] = []
        self.buf = np.zeros((0, self.buffer_size), dtype=np.int64)   # [>=C, B] windows
        self.ptr = np.zeros(0, dtype=np.int64)                       # [C] used of window
        self.start_pos = np.zeros((0, 2), dtype=np.int64)            # [C, (epoch, ctr)]
        self._end_pos: list[tuple[int, int]] = []
        self.cum = np.zeros(0, dtype=np.int64)                       # [C] cumulative sizes

    # -- definition ----------------------------------------------------------------
    def add(self, ends_old: list[int], ends_new: list[int]) -> bool:
        """Create the cluster admitted when the prefixes grow ``ends_old -> ends_new``.

        Returns False (nothing added) when no sample is new. An end never lies below its
        index's low edge (the sampler starts the ends there).
        """
        if len(self.indexes) == 1:
            c = {"primary": 0, "start": ends_old[0], "length": ends_new[0] - ends_old[0]}
            c["size"] = c["length"]
        else:
            p = int(np.argmin([e - lo for e, lo in zip(ends_new, self.lows)]))
            c = {"primary": p, "start": self.lows[p], "length": ends_new[p] - self.lows[p]}
        c.update(ends_old=list(ends_old), ends_new=list(ends_new))
        bounds = self._make_bounds(c)
        if len(self.indexes) > 1:
            ss = self.indexes[c["primary"]].sorted_samples
            c["size"] = sum(int(self._members(np.asarray(ss[a:a + _CHUNK]), bounds).sum())
                            for a in range(0, c["length"], _CHUNK))
        if c["size"] <= 0:
            return False
        prefault(self.indexes[c["primary"]].sorted_samples, c["start"], c["start"] + c["length"])
        self._append(c, bounds, 0, 0, 0)
        return True

    def _append(self, c: dict, bounds, epoch: int, ctr: int, ptr: int) -> None:
        i = len(self.defs)
        self.defs.append(c)
        self._bounds.append(bounds)
        window, end = self._fill(i, epoch, ctr)
        if i == len(self.buf):                   # grow by doubling: adding stays O(window)
            grown = np.empty((max(8, 2 * i), self.buffer_size), dtype=np.int64)
            grown[:i] = self.buf
            self.buf = grown
        self.buf[i] = window
        self.ptr = np.append(self.ptr, ptr)
        self.start_pos = np.concatenate([self.start_pos, [[epoch, ctr]]], axis=0)
        self._end_pos.append(end)
        self.cum = np.cumsum([d["size"] for d in self.defs]).astype(np.int64)

    def _make_bounds(self, c: dict):
        if len(self.indexes) == 1:
            return ([], [], [])
        return ([Boundary(x, e) for x, e in zip(self.indexes, c["ends_new"])],
                [Boundary(x, e) for x, e in zip(self.indexes, c["ends_old"])],
                [Boundary(x, lo) for x, lo in zip(self.indexes, self.lows)])

    def _members(self, ids: np.ndarray, bounds) -> np.ndarray:
        """Which ids are admitted by every metric now and were not by all before."""
        new_ok = np.ones(len(ids), dtype=bool)
        old_ok = np.ones(len(ids), dtype=bool)
        for index, bn, bo, bl in zip(self.indexes, *bounds):
            vals = index.sample_to_metric[ids]
            in_band = ~bl.admits(vals, ids)          # at or above the window's low edge
            new_ok &= bn.admits(vals, ids) & in_band
            old_ok &= bo.admits(vals, ids) & in_band
        return new_ok & ~old_ok

    # -- streams -------------------------------------------------------------------
    def _fill(self, i: int, epoch: int, ctr: int) -> tuple[np.ndarray, tuple[int, int]]:
        """The next ``buffer_size`` ids of cluster ``i``'s stream from (epoch, ctr)."""
        c = self.defs[i]
        length, size = c["length"], c["size"]
        bits = perm.domain_bits(length)
        dom = 1 << bits
        ss = self.indexes[c["primary"]].sorted_samples
        out, have = np.empty(self.buffer_size, dtype=np.int64), 0
        while have < self.buffer_size:
            want = self.buffer_size - have
            n = min(dom - ctr, int(want * dom / size * 1.1) + 64)
            x = np.arange(ctr, ctr + n, dtype=np.uint64)
            y = perm.feistel(x, np.uint64(bits), perm.round_keys(self.seed, i, epoch))
            keep = np.flatnonzero(y < np.uint64(length))
            ids = np.asarray(ss[y[keep].astype(np.int64) + c["start"]], dtype=np.int64)
            if len(self.indexes) > 1:
                member = self._members(ids, self._bounds[i])
                ids, keep = ids[member], keep[member]
            if len(ids) > want:                  # stop right after the last id used
                ids, n = ids[:want], int(keep[want - 1]) + 1
            out[have:have + len(ids)] = ids
            have += len(ids)
            ctr += n
            if ctr == dom:                       # epoch used up: reshuffle
                epoch, ctr = epoch + 1, 0
        return out, (epoch, ctr)

    def _refill(self, i: int) -> None:
        epoch, ctr = self._end_pos[i]
        self.buf[i], self._end_pos[i] = self._fill(i, epoch, ctr)
        self.start_pos[i] = (epoch, ctr)
        self.ptr[i] = 0

    def _take_one(self, i: int, count: int) -> np.ndarray:
        """Next ``count`` ids of cluster ``i``, refilling its window as needed."""
        parts = []
        while count:
            if self.ptr[i] == self.buffer_size:
                self._refill(i)
            k = min(count, self.buffer_size - int(self.ptr[i]))
            parts.append(self.buf[i, self.ptr[i]:self.ptr[i] + k].copy())
            self.ptr[i] += k
            count -= k
        return np.concatenate(parts)

    def take(self, slots: np.ndarray) -> np.ndarray:
        """Ids for slots labelled with their cluster: the i-th slot of cluster c gets c's
        next id in stream order.                                 # [G] -> [G] int64"""
        b = self.buffer_size
        counts = np.bincount(slots, minlength=len(self.defs))
        # A stable sort groups the slots by cluster; 16-bit keys get NumPy's radix sort.
        keys = slots.astype(np.int16) if len(self.defs) < 32768 else slots
        order = np.argsort(keys, kind="stable")
        lab = slots[order]
        first = np.cumsum(counts) - counts
        col = self.ptr[lab] + np.arange(len(slots)) - first[lab]
        over = np.flatnonzero(self.ptr + counts > b)
        ids = self.buf.ravel()[lab * b + np.minimum(col, b - 1)]
        self.ptr += counts
        for i in over:                       # windows this step runs past (rare)
            self.ptr[i] -= counts[i]
            ids[first[i]:first[i] + counts[i]] = self._take_one(int(i), int(counts[i]))
        out = np.empty_like(ids)
        out[order] = ids
        return out

    # -- state ---------------------------------------------------------------------
    def snapshot(self) -> tuple[int, np.ndarray, np.ndarray]:
        """Cheap copy of the mutable part: (clusters, window starts, used counts)."""
        return len(self.defs), self.start_pos.copy(), self.ptr.copy()

    def state_dict(self, snap: tuple | None = None) -> list[dict[str, Any]]:
        k, start, ptr = snap if snap is not None else self.snapshot()
        return [dict(self.defs[i], epoch=int(start[i, 0]), ctr=int(start[i, 1]),
                     ptr=int(ptr[i])) for i in range(k)]

    def load_state_dict(self, clusters: list[dict[str, Any]]) -> None:
        self.__init__(self.indexes, self.seed, self.buffer_size, self.lows)
        keys = ("primary", "start", "length", "size", "ends_old", "ends_new")
        for st in clusters:
            c = {k: st[k] for k in keys}
            self._append(c, self._make_bounds(c), int(st["epoch"]), int(st["ctr"]),
                         int(st["ptr"]))
