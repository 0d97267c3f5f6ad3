"""Distributed reduce: sample-sort the metric values across ranks and write the CSR index.

Every rank holds the values of one contiguous range of sample ids (ranks in id order). A
sample sort (regular sampling for splitters, one all-to-all) leaves rank r with a contiguous
slice of the global (value, sample id) order, so no rank ever holds more than about N/P
entries. Each rank then writes its slices straight into the shared output files; the bytes
do not depend on the number of ranks.
"""

from __future__ import annotations

import os
import shutil

import numpy as np

from megatron.data_efficiency.analyzer.comm import Comm
from megatron.data_efficiency.analyzer.index_io import (create_npy, finalize_index_dir,
                                                         new_tmp_dir, write_npy_at)

_SAMPLES_PER_RANK = 64  # splitter candidates each rank contributes


def _lex_search(vals: np.ndarray, ids: np.ndarray, key_val, key_id: int) -> int:
    """First position in (vals, ids), sorted lexicographically, not below (key_val, key_id)."""
    lo = int(np.searchsorted(vals, key_val, side="left"))
    hi = int(np.searchsorted(vals, key_val, side="right"))
    return lo + int(np.searchsorted(ids[lo:hi], key_id, side="left"))


def sample_sort(comm: Comm, first_id: int, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Globally sort (value, sample id); this rank's ids are first_id .. first_id+len(values)-1.

    Returns:
        (sorted values, sample ids) of this rank's slice of the global order.
    """
    order = np.argsort(values, kind="stable")
    vals, ids = values[order], order.astype(np.int64) + first_id
    if comm.size == 1:
        return vals, ids
    pick = np.linspace(0, len(vals) - 1, min(len(vals), _SAMPLES_PER_RANK)).astype(np.int64)
    cands = comm.allgather((vals[pick], ids[pick]))
    cv = np.concatenate([c[0] for c in cands])
    ci = np.concatenate([c[1] for c in cands])
    o = np.lexsort((ci, cv))
    cv, ci = cv[o], ci[o]
    split = [0]
    for r in range(1, comm.size):
        j = (r * len(cv)) // comm.size
        split.append(_lex_search(vals, ids, cv[j], int(ci[j])) if len(cv) else 0)
    split.append(len(vals))
    counts = np.diff(np.array(split, dtype=np.int64))
    rv, _ = comm.alltoallv(vals, counts)
    ri, _ = comm.alltoallv(ids, counts)
    # Pieces arrive in source-rank order, i.e. ascending id blocks, each sorted by (value,
    # id): a stable sort by value alone therefore yields (value, id) order.
    o = np.argsort(rv, kind="stable")
    return rv[o], ri[o]


def write_index_parallel(comm: Comm, final_dir: str, metric: str, first_id: int,
                         values: np.ndarray, fingerprint: str, extra_meta: dict | None = None) -> None:
    """Write ``final_dir`` (see index_io) from every rank's contiguous block of values."""
    counts = comm.allgather(len(values))
    n = int(sum(counts))
    vals, ids = sample_sort(comm, first_id, values)
    new = np.ones(len(vals), dtype=bool)
    new[1:] = vals[1:] != vals[:-1]
    info = comm.allgather((len(vals), vals[:1].copy(), vals[-1:].copy(), int(new.sum())))
    # A run of equal values may straddle ranks: drop the first distinct value of a rank when
    # it continues the previous non-empty rank's last value.
    pos, vpos, last, merge_me = 0, 0, None, False
    for r, (nr, first_v, last_v, nd) in enumerate(info):
        merge = nr > 0 and last is not None and first_v[0] == last[0]
        if r == comm.rank:
            my_pos, my_vpos, merge_me = pos, vpos, merge
        if nr:
            pos, vpos, last = pos + nr, vpos + nd - int(merge), last_v
    num_values = vpos
    if merge_me:
        new[0] = False
    tmp = comm.bcast(new_tmp_dir(final_dir) if comm.rank == 0 else None)
    dtype = values.dtype
    files = {"sample_to_metric.npy": (dtype, n), "sorted_samples.npy": (np.int64, n),
             "values.npy": (dtype, num_values), "offsets.npy": (np.int64, num_values + 1)}
    try:
        if comm.rank == 0:
            for name, (dt, length) in files.items():
                create_npy(os.path.join(tmp, name), dt, length)
        comm.barrier()
        starts = np.flatnonzero(new)
        _write_slice(tmp, "sample_to_metric.npy", first_id, values)
        _write_slice(tmp, "sorted_samples.npy", my_pos, ids)
        _write_slice(tmp, "values.npy", my_vpos, vals[starts])
        tail = np.array([n], dtype=np.int64) if comm.rank == comm.size - 1 else np.zeros(0, np.int64)
        _write_slice(tmp, "offsets.npy", my_vpos, np.concatenate((starts + my_pos, tail)))
        ok = comm.allgather(True)
        if comm.rank == 0 and all(ok):
            finalize_index_dir(tmp, final_dir, metric, fingerprint, extra_meta)
    except BaseException:
        if comm.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    comm.barrier()


def _write_slice(folder: str, name: str, start: int, arr: np.ndarray) -> None:
    """Write ``arr`` at item ``start`` of the .npy file ``folder/name``."""
    write_npy_at(os.path.join(folder, name), start, arr)
