"""Indexes written by DeepSpeed's ``DataAnalyzer``, read as this project's CSR index.

DeepSpeed's reduce step writes, per metric, two ``MMapIndexedDataset`` pairs (the ``.bin``
/ ``.idx`` layout of Megatron's token store) under ``SAVE/<metric>/``:

    <metric>_index_to_metric   row k = [v_k], the k-th distinct value (strictly ascending)
    <metric>_index_to_sample   row k = the ids of every sample whose value is v_k

which is our CSR index (``index_io``) with ``values = v`` and ``offsets`` the cumulative row
lengths. The header's dtype code is looked up in DeepSpeed's table, which is not
Megatron's: 6, 7, 8 are uint16, uint32, uint64 there (float64, float32, uint16 in
Megatron's), and DeepSpeed picks uint16 for any value range up to 65535, so a Megatron
reader would misread most DeepSpeed indexes.

DeepSpeed's files carry no fingerprint of the data they describe. What can be checked is
the number of samples: an index over another dataset almost always counts other samples,
so ``check_sample_count`` refuses a mismatch naming both counts; a converted index keeps
``"fingerprint": null`` and ``"source": "deepspeed"`` in its meta.json so that readers know
to check the count instead (``MetricIndex.open(..., expected_num_samples=N)``).

Within one value, samples are stored in ascending id order (as our analyzer does); DeepSpeed
writes them in the order its map workers met them, which is also ascending for its own
analyzer, so percentile prefixes cut the same samples.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from megatron.data.indexed_dataset import MMapIndexedDataset, write_index
from megatron.data_efficiency.analyzer.index_io import (MetricIndex, check_sample_count,
                                                         write_metric_index)

# deepspeed/runtime/data_pipeline/data_sampling/indexed_dataset.py: ``dtypes``
DEEPSPEED_DTYPE_CODES: dict[int, type] = {
    1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32,
    5: np.int64, 6: np.uint16, 7: np.uint32, 8: np.uint64,
}
_DS_CODE_OF = {np.dtype(t): c for c, t in DEEPSPEED_DTYPE_CODES.items()}
SAMPLE_SUFFIX, METRIC_SUFFIX = "_index_to_sample", "_index_to_metric"
MERGED_SUFFIX = "_index_to_sample_percentile_merged"


class DeepSpeedIndexedDataset(MMapIndexedDataset):
    """A DeepSpeed ``MMapIndexedDataset`` pair: same layout and checks, DeepSpeed's dtype codes."""

    dtype_codes = DEEPSPEED_DTYPE_CODES


def fit_int_dtype(lo: int, hi: int) -> np.dtype:
    """The dtype DeepSpeed's ``find_fit_int_dtype`` picks for integers in ``lo..hi``."""
    kinds = (np.uint8, np.uint16, np.uint32, np.uint64) if lo >= 0 else \
        (np.int8, np.int16, np.int32, np.int64)
    for t in kinds:
        info = np.iinfo(t)
        if info.min <= lo and hi <= info.max:
            return np.dtype(t)
    raise ValueError(f"integers {lo}..{hi} fit no 64-bit type")


def write_deepspeed_rows(prefix: str, rows: list[np.ndarray], dtype) -> None:
    """Write ``rows`` as DeepSpeed's analyzer does (one document, DeepSpeed's dtype code).

    Used to build fixtures and to export; ``prefix.bin`` / ``prefix.idx`` are written to
    temporary names and renamed.
    """
    dtype = np.dtype(dtype)
    if dtype not in _DS_CODE_OF:
        raise ValueError(f"DeepSpeed's index format has no code for {dtype}")
    tmp = f"{prefix}.tmp{os.getpid()}"
    with open(tmp + ".bin", "wb") as f:
        for row in rows:
            f.write(np.asarray(row).astype(dtype).tobytes())
    write_index(tmp + ".idx", dtype, [len(r) for r in rows], [0, len(rows)], code=_DS_CODE_OF[dtype])
    os.replace(tmp + ".bin", prefix + ".bin")
    os.replace(tmp + ".idx", prefix + ".idx")


@dataclass(frozen=True)
class DeepSpeedIndexPaths:
    """The two file prefixes of one DeepSpeed metric index and the metric's name."""
    name: str
    index_to_sample: str
    index_to_metric: str


def resolve_paths(arg: str, name: str | None = None) -> DeepSpeedIndexPaths:
    """Find the pair from what a user may give: ``SAVE/<m>/<m>``, either file prefix
    (``..._index_to_sample`` / ``..._index_to_metric`` /
    ``..._index_to_sample_percentile_merged``, with or without ``.idx``) or the metric
    folder ``SAVE/<m>``."""
    base = arg[:-4] if arg.endswith((".idx", ".bin")) else arg
    if os.path.isdir(base):
        found = sorted(f[:-len(SAMPLE_SUFFIX) - 4] for f in os.listdir(base)
                       if f.endswith(SAMPLE_SUFFIX + ".idx"))
        if len(found) != 1:
            raise ValueError(f"{arg}: expected one *{SAMPLE_SUFFIX}.idx in the folder, found "
                             f"{len(found)}")
        base = os.path.join(base, found[0])
    # The percentile-merged file (what the GPT recipe passes for percentile metrics) holds the
    # same ids in the same order as index_to_sample, in fewer rows; the pair beside it is read.
    for suffix in (MERGED_SUFFIX, SAMPLE_SUFFIX, METRIC_SUFFIX):
        if base.endswith(suffix):
            base = base[:-len(suffix)]
            break
    paths = DeepSpeedIndexPaths(name or os.path.basename(base), base + SAMPLE_SUFFIX,
                                base + METRIC_SUFFIX)
    for prefix in (paths.index_to_sample, paths.index_to_metric):
        for ext in (".idx", ".bin"):
            if not os.path.isfile(prefix + ext):
                raise FileNotFoundError(f"DeepSpeed index file not found: {prefix + ext}")
    return paths


def read_sample_values(paths: DeepSpeedIndexPaths) -> np.ndarray:
    """[N] int64 value of every sample, from the two DeepSpeed files (checked)."""
    samples = DeepSpeedIndexedDataset(paths.index_to_sample)
    metric = DeepSpeedIndexedDataset(paths.index_to_metric)
    where = f"DeepSpeed index {paths.index_to_sample}"
    if len(samples) != len(metric):
        raise ValueError(f"{where}: {len(samples)} rows but {paths.index_to_metric} has "
                         f"{len(metric)} values")
    if np.any(metric.sizes != 1):
        raise ValueError(f"{paths.index_to_metric}: every row must hold one value")
    if metric.dtype == np.uint64 and len(metric) and metric.tokens.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{paths.index_to_metric}: values above the int64 range")
    values = metric.tokens.astype(np.int64)                     # [V]
    if np.any(np.diff(values) <= 0):
        raise ValueError(f"{paths.index_to_metric}: values are not strictly ascending")
    ids = samples.tokens.astype(np.int64)                       # [N] grouped by value
    n = len(ids)
    if n and (ids.min() < 0 or ids.max() >= n or np.any(np.bincount(ids, minlength=n) != 1)):
        raise ValueError(f"{where}: the sample ids are not each of 0..{n - 1} exactly once")
    out = np.empty(n, dtype=np.int64)
    out[ids] = np.repeat(values, samples.sizes.astype(np.int64))
    return out


def open_deepspeed_index(paths: DeepSpeedIndexPaths,
                         expected_num_samples: int | None = None) -> MetricIndex:
    """Read a DeepSpeed index directly into an in-memory ``MetricIndex`` (no files written)."""
    s2m = read_sample_values(paths)
    if expected_num_samples is not None:
        check_sample_count(len(s2m), expected_num_samples, f"DeepSpeed index {paths.index_to_sample}")
    order = np.argsort(s2m, kind="stable").astype(np.int64)
    values, counts = np.unique(s2m, return_counts=True)
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    meta = {"metric": paths.name, "num_samples": len(s2m), "num_values": len(values),
            "fingerprint": None, "source": "deepspeed"}
    arrays = {"sample_to_metric.npy": s2m, "sorted_samples.npy": order,
              "values.npy": values.astype(np.int64), "offsets.npy": offsets}
    return MetricIndex(paths.index_to_sample, meta, arrays)


def convert_deepspeed_index(paths: DeepSpeedIndexPaths, out_path: str,
                            expected_num_samples: int | None = None,
                            fingerprint: str | None = None) -> MetricIndex:
    """Write ``out_path`` (our ``DIR/<metric>`` folder) from a DeepSpeed index; returns it opened.

    Args:
        expected_num_samples: refuse the index unless it describes exactly this many samples.
        fingerprint: the training set's fingerprint (when the caller built the dataset and
            checked its count); None leaves the output unfingerprinted (count check only).
    """
    s2m = read_sample_values(paths)
    if expected_num_samples is not None:
        check_sample_count(len(s2m), expected_num_samples, f"DeepSpeed index {paths.index_to_sample}")
    write_metric_index(out_path, paths.name, s2m, fingerprint=fingerprint, extra_meta={
        "source": "deepspeed", "deepspeed_index_to_sample": os.path.abspath(paths.index_to_sample),
        "deepspeed_index_to_metric": os.path.abspath(paths.index_to_metric)})
    return MetricIndex.open(out_path, fingerprint, expected_num_samples)
