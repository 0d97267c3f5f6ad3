"""Checks of analyzer indexes: that an index's arrays agree (``validate_index_arrays``,
called by ``index_io.MetricIndex.open``, so by training, the prune tool and the inspector
alike), and that an analyzer run does not replace indexes made from other data or with
other settings (``refuse_replacing``, unless ``--force``)."""
from __future__ import annotations

import json
import os

import numpy as np

VALIDATE_CHUNK = 1 << 20   # sorted positions per chunk: ~40 MB of temporaries


def validate_index_arrays(index, chunk: int = VALIDATE_CHUNK) -> None:
    """Refuse an index (a ``MetricIndex``) whose arrays contradict each other:
    ``sorted_samples`` must hold every id ``0..N-1`` once, sorted by (value, id), and
    ``values`` / ``offsets`` must be its CSR (values finite and strictly ascending, every
    group non-empty, the value of each sample in group ``k`` equal to ``values[k]``). A
    value order follows from that.

    Streamed in chunks of sorted positions: O(N) time; memory is a bitmap of the ids seen
    (N / 8 bytes, 125 MB for a billion samples) plus O(chunk) temporaries. The values are
    read at the chunk's ids, i.e. ``sample_to_metric`` in random order (its pages stay in
    the page cache for the run anyway).

    Raises:
        ValueError: ``metric index PATH is damaged: ...``, naming the first rule broken.
    """
    n, where = index.num_samples, f"metric index {index.path} is damaged"
    values, offsets = index.values, index.offsets
    for a in range(0, len(values), chunk):   # the CSR alone, with one element of overlap
        v = np.asarray(values[max(a - 1, 0):a + chunk])
        if v.dtype.kind == "f" and not np.isfinite(v).all():
            raise ValueError(f"{where}: non-finite metric values")
        if (np.diff(v) <= 0).any() or (np.diff(np.asarray(offsets[a:a + chunk + 1])) <= 0).any():
            raise ValueError(f"{where}: values / offsets disagree with sorted_samples (values "
                             "not strictly ascending or an empty value group)")
    seen = np.zeros((n + 7) // 8, dtype=np.uint8)
    last_id, last_group = -1, -1
    for a in range(0, n, chunk):
        ids = np.asarray(index.sorted_samples[a:a + chunk], dtype=np.int64)
        if ids.min() < 0 or ids.max() >= n:
            raise ValueError(f"{where}: sorted_samples is not a permutation of 0..{n - 1}")
        _mark_seen(seen, ids, f"{where}: sorted_samples is not a permutation of 0..{n - 1}")
        group = np.searchsorted(offsets, np.arange(a, a + len(ids)), side="right") - 1
        if not np.array_equal(np.asarray(index.sample_to_metric[ids]), values[group]):
            raise ValueError(f"{where}: values / offsets disagree with sorted_samples")
        same = np.concatenate(([group[0] == last_group], group[1:] == group[:-1]))
        prev = np.concatenate(([last_id], ids[:-1]))
        if (same & (ids <= prev)).any():
            raise ValueError(f"{where}: sorted_samples is not sorted by (value, id)")
        last_id, last_group = int(ids[-1]), int(group[-1])


def _mark_seen(seen: np.ndarray, ids: np.ndarray, message: str) -> None:
    """Set the bits of ``ids`` in the bitmap ``seen``; ValueError(message) on a repeat."""
    u = np.sort(ids)
    if (np.diff(u) == 0).any():
        raise ValueError(message)
    byte, bit = u >> 3, (1 << (u & 7)).astype(np.uint8)
    if (seen[byte] & bit).any():
        raise ValueError(message)
    starts = np.flatnonzero(np.concatenate(([True], byte[1:] != byte[:-1])))
    seen[byte[starts]] |= np.bitwise_or.reduceat(bit, starts)


def replacement_problem(save_path: str, fingerprint: str, planned: dict[str, dict]) -> str | None:
    """Why this run may not replace the indexes already in ``save_path`` (None: none is
    there, or each was made from the same data with the same settings, e.g. an earlier
    attempt of this run).

    Args:
        fingerprint: the fingerprint this run writes.
        planned: ``{metric folder: {meta.json key: value this run writes}}``.
    """
    found = []
    for name, settings in sorted(planned.items()):
        path = os.path.join(save_path, name, "meta.json")
        try:
            with open(path) as f:
                meta = json.load(f)
        except (OSError, ValueError):
            continue   # nothing there, or not a readable index: nothing to lose
        wanted = json.loads(json.dumps({"fingerprint": fingerprint, **settings}))
        changed = [f"{k} {meta.get(k)!r} -> {v!r}" for k, v in wanted.items() if meta.get(k) != v]
        if changed:
            found.append(f"{name} ({', '.join(changed)})")
    if not found:
        return None
    return (f"{save_path} holds indexes made with other data or settings: {'; '.join(found)}; "
            "give --force to replace them, or another --save-path")


def refuse_replacing(cfg, comm, fingerprint: str,
                     planned: dict[str, dict]) -> None:
    """Collective (``comm``: the analyzer's ranks): without ``cfg.force`` (``--force``), stop
    before any work when ``cfg.save_path`` holds indexes made with other data or settings
    (``replacement_problem``)."""
    problem = comm.bcast(replacement_problem(cfg.save_path, fingerprint, planned)
                         if comm.rank == 0 and not cfg.force else None)
    if problem is not None:
        raise ValueError(problem)
