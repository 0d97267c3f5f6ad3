"""On-disk metric index written by the data analyzer and read by the curriculum sampler.

Layout of one metric, ``DIR/<metric>/`` (every array is a plain ``.npy`` file, so
``np.load(path, mmap_mode="r")`` maps it without reading it)::

    sample_to_metric.npy  int64 | float64 [N]   metric value of every sample, in sample-id order
    sorted_samples.npy    int64 [N]             sample ids sorted by (value, sample id)
    values.npy            same dtype [V]        the distinct values, ascending
    offsets.npy           int64 [V + 1]         samples with value values[k] are
                                                sorted_samples[offsets[k]:offsets[k+1]]
    meta.json                                   metric, dtype, counts, percentile values,
                                                fingerprint of the data + sample index

Because ``sorted_samples`` is sorted, "every sample at or below value v" and "the easiest p
percent" are both prefixes ``sorted_samples[:end]``. The token histogram lives in
``DIR/total_vocab_freq/counts.npy`` (int64 [vocab]).

A folder is always written under a temporary name and renamed when complete, so a reader
never sees a half-written index.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from fractions import Fraction
from typing import Any, Sequence

import numpy as np

from megatron.data_efficiency.analyzer.index_checks import validate_index_arrays

FORMAT_VERSION = 1
INDEX_FILES = ("sample_to_metric.npy", "sorted_samples.npy", "values.npy", "offsets.npy", "meta.json")


def dataset_fingerprint(data_prefixes: Sequence[str] | str, granularity: str,
                        split: str | None = None, seq_length: int | None = None,
                        seed: int | None = None, num_samples: int | None = None,
                        sample_maps: Sequence[np.ndarray] = ()) -> str:
    """Short hash identifying the data an index was built from and how samples were numbered.

    It covers, for every prefix, the whole ``.idx`` file (header, sizes, pointers, doc_idx) and
    the byte length of the ``.bin`` file; and the sample-index parameters (granularity, and for
    ``sample`` granularity the split string, seq_length, seed and number of samples). Token
    contents are not hashed (that would read the whole corpus); a ``.bin`` rewritten in place
    with the same length and index is not detected.

    Args:
        data_prefixes: one prefix or a list of prefixes (``path/name`` without ``.bin``/``.idx``).
        granularity: "document" or "sample".
        split, seq_length, seed, num_samples: the GPT dataset arguments (ignored for "document").
        sample_maps: the arrays that number the samples (a GPT dataset's ``doc_idx``,
            ``sample_idx``, ``shuffle_idx``); hashed whole, so an index is accepted exactly
            when training would number its samples the same way, whatever ``--train-samples``
            produced those maps. Pass ``num_samples=len(dataset)`` with them.

    Returns:
        16 hex characters (a truncated sha256).
    """
    if isinstance(data_prefixes, str):
        data_prefixes = [data_prefixes]
    h = hashlib.sha256()
    for prefix in data_prefixes:
        idx_path, bin_path = prefix + ".idx", prefix + ".bin"
        for path in (idx_path, bin_path):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"dataset file not found: {path}")
        with open(idx_path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        h.update(f"|bin={os.path.getsize(bin_path)}|".encode())
    params: dict[str, Any] = {"granularity": granularity}
    if granularity == "sample":
        params.update(split=split, seq_length=seq_length, seed=seed, num_samples=num_samples)
    h.update(json.dumps(params, sort_keys=True).encode())
    for array in sample_maps:
        array = np.ascontiguousarray(array)
        h.update(f"|{array.dtype.str}{array.shape}|".encode())
        flat = array.reshape(-1).view(np.uint8)
        for start in range(0, len(flat), 1 << 26):       # 64 MiB at a time
            h.update(flat[start:start + (1 << 26)])
    return h.hexdigest()[:16]


def _load(folder: str, name: str) -> np.ndarray:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise ValueError(f"metric index {folder}: missing file {name} (incomplete or not an index)")
    try:
        return np.load(path, mmap_mode="r")
    except (ValueError, OSError) as e:
        raise ValueError(f"metric index {folder}: cannot read {name}: {e}") from e


class FingerprintMismatch(ValueError):
    """An index made for other samples than the run's; ``meta`` is its ``meta.json`` (what
    the index describes, e.g. its ``blend``), so the caller can name the difference."""

    def __init__(self, meta: dict, message: str) -> None:
        super().__init__(message)
        self.meta = meta


class MetricIndex:
    """Read-only, memory-mapped view of one ``DIR/<metric>/`` folder (see module docstring)."""

    def __init__(self, path: str, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        self.path = path
        self.meta = meta
        self.metric: str = meta["metric"]
        self.sample_to_metric = arrays["sample_to_metric.npy"]
        self.sorted_samples = arrays["sorted_samples.npy"]
        self.values = arrays["values.npy"]
        self.offsets = arrays["offsets.npy"]
        self.num_samples = int(len(self.sample_to_metric))

    @classmethod
    def open(cls, path: str, expected_fingerprint: str | None = None,
             expected_num_samples: int | None = None) -> "MetricIndex":
        """Map the index in ``path``; ValueError if it is incomplete, inconsistent, damaged
        (``validate_index_arrays``) or belongs to other data (``expected_fingerprint``
        given and different).

        An index converted from DeepSpeed has no fingerprint (``meta["source"] ==
        "deepspeed"``): for it the check is the sample count, ``expected_num_samples``.
        """
        if not os.path.isdir(path):
            raise ValueError(f"metric index folder not found: {path}")
        meta_path = os.path.join(path, "meta.json")
        if not os.path.isfile(meta_path):
            raise ValueError(f"metric index {path}: missing file meta.json (incomplete or not an index)")
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get("source") == "deepspeed" and meta.get("fingerprint") is None:
            if expected_fingerprint is not None and expected_num_samples is None:
                raise ValueError(f"metric index {path} was converted from DeepSpeed and has no "
                                 f"fingerprint: open it with the dataset's sample count")
            expected_fingerprint = None
        if expected_num_samples is not None:
            check_sample_count(meta.get("num_samples", -1), expected_num_samples, f"metric index {path}")
        if expected_fingerprint is not None and meta.get("fingerprint") != expected_fingerprint:
            raise FingerprintMismatch(meta, (
                f"metric index {path} was built for other data or sample-index parameters: "
                f"its fingerprint is {meta.get('fingerprint')!r}, the dataset in use has "
                f"{expected_fingerprint!r}; re-run tools/analyze_data.py for this dataset"))
        arrays = {name: _load(path, name) for name in INDEX_FILES[:4]}
        n, v = len(arrays["sample_to_metric.npy"]), len(arrays["values.npy"])
        offsets = arrays["offsets.npy"]
        problems = []
        if len(arrays["sorted_samples.npy"]) != n:
            problems.append(f"sorted_samples has {len(arrays['sorted_samples.npy'])} entries, expected {n}")
        if len(offsets) != v + 1 or (len(offsets) and (offsets[0] != 0 or offsets[-1] != n)):
            problems.append(f"offsets must have {v + 1} entries from 0 to {n}")
        if arrays["values.npy"].dtype != arrays["sample_to_metric.npy"].dtype:
            problems.append("values and sample_to_metric dtypes differ")
        if meta.get("num_samples") != n or meta.get("num_values") != v:
            problems.append(f"meta.json counts ({meta.get('num_samples')}, {meta.get('num_values')}) "
                            f"do not match the arrays ({n}, {v})")
        if problems:
            raise ValueError(f"metric index {path} is inconsistent: " + "; ".join(problems))
        index = cls(path, meta, arrays)
        validate_index_arrays(index)   # index_checks.py
        return index

    def samples_at_or_below(self, value: float) -> int:
        """End of the prefix of ``sorted_samples`` whose values are <= ``value``."""
        return value_end(self.values, self.offsets, value)

    def percentile_end(self, p: float) -> int:
        """Number of samples in the lowest ``p`` percent (0..100) of the sorted order."""
        return percentile_end(self.num_samples, p)

    def value_at(self, position: int) -> float | int:
        """Metric value of the sample at ``position`` of the sorted order."""
        k = int(np.searchsorted(self.offsets, position, side="right")) - 1
        return self.values[k].item()


def value_end(values: np.ndarray, offsets: np.ndarray, value: float) -> int:
    """End of the prefix of the sorted order whose values are <= ``value``, from the CSR
    ``values`` [V] (ascending) and ``offsets`` [V+1]."""
    return int(offsets[np.searchsorted(values, value, side="right")])
def check_sample_count(index_samples: int, dataset_samples: int, where: str) -> None:
    """Refuse an index whose sample count is not the training dataset's (the one check an
    index without a fingerprint, e.g. one written by DeepSpeed's analyzer, allows)."""
    if int(index_samples) != int(dataset_samples):
        raise ValueError(
            f"{where}: the index describes {int(index_samples)} samples but the training "
            f"dataset has {int(dataset_samples)}; it was built for other data, split, seed, "
            f"sequence length or number of epochs")


def percentile_end(num_samples: int, p: float) -> int:
    """floor(p * N / 100), computed exactly on the decimal ``p`` as written (12.5 -> 1/8)."""
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within 0..100, got {p}")
    return int(Fraction(repr(float(p))) * num_samples // 100)


def percentile_prefix(num_samples: int, p: float, max_difficulty: float = 100) -> int:
    """Samples a percentile difficulty ``p`` admits, DeepSpeed's arithmetic:
    ``(N // max_difficulty) * p``, all ``N`` at ``max_difficulty``; ``p`` and the maximum
    are taken exactly as written (12.5 is 1/8)."""
    n = int(num_samples)
    if p == max_difficulty:
        return n
    per_step = Fraction(n) // Fraction(repr(float(max_difficulty)))
    return min(n, max(0, int(per_step * Fraction(repr(float(p))))))


def _percentile_values(values: np.ndarray, offsets: np.ndarray, n: int) -> list:
    """Value of the last sample inside the lowest p percent, p = 0..100 (p=0 gives the min)."""
    if n == 0:
        return []
    ends = np.array([max(percentile_end(n, p), 1) for p in range(101)], dtype=np.int64)
    k = np.searchsorted(offsets, ends - 1, side="right") - 1
    return [values[i].item() for i in k]


def finalize_index_dir(tmp: str, final: str, metric: str, fingerprint: str,
                       extra_meta: dict | None = None) -> None:
    """Write meta.json into ``tmp`` (whose four .npy files are complete) and publish it as ``final``."""
    s2m = np.load(os.path.join(tmp, "sample_to_metric.npy"), mmap_mode="r")
    values = np.load(os.path.join(tmp, "values.npy"), mmap_mode="r")
    offsets = np.load(os.path.join(tmp, "offsets.npy"), mmap_mode="r")
    n = len(s2m)
    pct = _percentile_values(values, offsets, n)
    meta = {"format_version": FORMAT_VERSION, "metric": metric, "dtype": str(s2m.dtype),
            "num_samples": n, "num_values": int(len(values)), "fingerprint": fingerprint,
            "min": pct[0] if pct else None, "max": pct[-1] if pct else None,
            "percentile_values": pct}
    meta.update(extra_meta or {})
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")
    publish_dir(tmp, final)


def publish_dir(tmp: str, final: str) -> None:
    """Rename the complete folder ``tmp`` to ``final``, replacing an older ``final``."""
    old = None
    if os.path.exists(final):
        old = f"{final}.old-{uuid.uuid4().hex[:8]}"
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def new_tmp_dir(final: str) -> str:
    """A fresh temporary folder beside ``final``."""
    tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
    os.makedirs(tmp)
    return tmp


def normalize_values(values: np.ndarray) -> np.ndarray:
    """Metric values as int64 (integer/bool input) or float64 (anything else), -0.0 -> 0.0."""
    values = np.asarray(values)
    if values.dtype.kind in "biu":
        return values.astype(np.int64)
    out = values.astype(np.float64)
    return out + 0.0  # adding 0.0 turns -0.0 into 0.0 so equal values have equal bytes


def write_metric_index(path: str, metric: str, sample_to_metric: np.ndarray, fingerprint: str,
                       extra_meta: dict | None = None) -> None:
    """Build and write the whole index for one metric in this process (small data, tests).

    Args:
        path: the metric folder, ``DIR/<metric>``.
        sample_to_metric: [N] value of each sample (int -> int64, float -> float64).
    """
    vals = normalize_values(sample_to_metric)
    if vals.dtype.kind == "f" and not np.all(np.isfinite(vals)):
        bad = int(np.nonzero(~np.isfinite(vals))[0][0])
        raise ValueError(f"metric {metric}: sample {bad} has non-finite value {vals[bad]}")
    order = np.argsort(vals, kind="stable").astype(np.int64)
    sorted_vals = vals[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_vals[1:] != sorted_vals[:-1]))) \
        if len(vals) else np.zeros(0, np.int64)
    offsets = np.append(starts, len(vals)).astype(np.int64)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = new_tmp_dir(path)
    try:
        for name, arr in (("sample_to_metric.npy", vals), ("sorted_samples.npy", order),
                          ("values.npy", sorted_vals[starts]), ("offsets.npy", offsets)):
            save_npy(os.path.join(tmp, name), arr)
        finalize_index_dir(tmp, path, metric, fingerprint, extra_meta)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_npy(path: str, arr: np.ndarray) -> None:
    """np.save through open_memmap's header, the same bytes the parallel writer produces."""
    create_npy(path, arr.dtype, len(arr))  # the map it returns is dropped unused
    write_npy_at(path, 0, arr)


def write_npy_at(path: str, start: int, arr: np.ndarray) -> None:
    """Write the 1-D ``arr`` over items ``start:start+len(arr)`` of the existing .npy ``path``.

    A positioned ``write`` into the page cache rather than a writable map + ``flush()``: the
    flush is an ``msync`` to disk (several ms per file, a fixed cost every rank paid per
    slice), while ``close()`` already makes the bytes visible to every later reader,
    including over NFS (close-to-open). The folder is published by rename, so a killed job
    never exposes a partial file.
    """
    if len(arr) == 0:
        return
    with open(path, "r+b") as f:
        read_header = (np.lib.format.read_array_header_1_0 if np.lib.format.read_magic(f) == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(f)
        if len(shape) != 1 or start < 0 or start + len(arr) > shape[0]:
            raise ValueError(f"{path}: cannot write items {start}..{start + len(arr)} of shape {shape}")
        data = np.ascontiguousarray(arr, dtype=dtype)
        view, pos = memoryview(data).cast("B"), f.tell() + start * dtype.itemsize
        while len(view):  # pwrite may write less than asked for
            done = os.pwrite(f.fileno(), view, pos)
            view, pos = view[done:], pos + done


def create_npy(path: str, dtype, length: int) -> np.ndarray:
    """Create a 1-D .npy file of ``length`` items; returns a writable map (or an empty array)."""
    dtype = np.dtype(dtype)
    if length == 0:  # mmap cannot map an empty payload; write the header only
        np.save(path, np.zeros(0, dtype=dtype))
        return np.zeros(0, dtype=dtype)
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(length,))
