"""Pruned token stores: keep a band of an analyzer index's sorted order as a new store.

The kept set is chosen on the index's sorted order (by (value, sample id), as the
curriculum sampler reads it), so ``--keep-percentile LO HI`` keeps exactly the samples a
``percentile_window`` of ``[LO, HI]`` admits. The output is an ordinary ``.bin/.idx``
(Megatron's format, the source's token dtype) that any trainer reads:

* document granularity: the kept documents, whole (every sequence of each), in their
  original order, byte for byte;
* sample granularity: every kept GPT training sample (``seq_length + 1`` tokens) as a
  document of one sequence, in sample-id order.

Beside it, ``OUT.json`` (the manifest) records the source store and its fingerprint, the
index, the selection, a sha256 of the kept ids and the tokens kept. All three files are
written under temporary names and renamed, the manifest last: a store with a manifest is
complete. An index that is damaged, inconsistent or built for other data is refused
(``MetricIndex.open`` validates the arrays as training does).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass

import numpy as np

from megatron.data.indexed_dataset import MMapIndexedDataset, MMapIndexedDatasetBuilder
from megatron.data_efficiency.analyzer.index_io import MetricIndex, percentile_prefix

ORDERS = ("easy", "hard", "middle", "random")


@dataclass(frozen=True)
class Selection:
    """Which part of the sorted order to keep: a percentile band, or a fraction taken
    from the easy end, the hard end, the middle, or at random (``seed``)."""
    keep_percentile: tuple[float, float] | None = None
    keep_fraction: float | None = None
    order: str | None = None
    seed: int = 1234

    def validate(self) -> None:
        if (self.keep_percentile is None) == (self.keep_fraction is None):
            raise ValueError("give exactly one of --keep-percentile LO HI and --keep-fraction F")
        if self.keep_percentile is not None:
            lo, hi = self.keep_percentile
            if not 0 <= lo < hi <= 100:
                raise ValueError(f"--keep-percentile {lo} {hi}: need 0 <= LO < HI <= 100")
            if self.order is not None:
                raise ValueError("--order goes with --keep-fraction, not --keep-percentile")
        else:
            if not 0 < self.keep_fraction <= 1:
                raise ValueError(f"--keep-fraction {self.keep_fraction}: need 0 < F <= 1")
            if self.order not in ORDERS:
                raise ValueError(f"--keep-fraction needs --order, one of {ORDERS}")


def kept_ids(index: MetricIndex, sel: Selection) -> np.ndarray:
    """Sample ids kept, ascending.                                           # [K] int64"""
    n = index.num_samples
    order = np.asarray(index.sorted_samples)
    if sel.keep_percentile is not None:
        lo, hi = sel.keep_percentile       # the sampler's window arithmetic (N // 100 * p)
        band = order[percentile_prefix(n, lo, 100):percentile_prefix(n, hi, 100)]
    else:
        k = int(np.floor(sel.keep_fraction * n))
        if sel.order == "random":
            band = np.random.default_rng(sel.seed).choice(n, size=k, replace=False)
        else:
            start = {"easy": 0, "hard": n - k, "middle": (n - k) // 2}[sel.order]
            band = order[start:start + k]
    return np.sort(np.asarray(band, dtype=np.int64))


@dataclass(frozen=True)
class PruneResult:
    output_prefix: str
    granularity: str
    kept: int
    total: int
    tokens_kept: int
    tokens_total: int
    kept_ids_sha256: str


def ids_hash(ids: np.ndarray) -> str:
    """sha256 of the kept ids as little-endian int64 (the manifest's ``kept_ids_sha256``)."""
    return hashlib.sha256(np.ascontiguousarray(ids, dtype="<i8").tobytes()).hexdigest()


def write_documents(store: MMapIndexedDataset, ids: np.ndarray, out_prefix: str) -> int:
    """Copy documents ``ids`` (all their sequences) into a new store; returns tokens."""
    builder = MMapIndexedDatasetBuilder(out_prefix + ".bin", dtype=store.dtype)
    tokens = 0
    try:
        doc_idx = np.asarray(store.doc_idx)
        for d in ids:
            first, last = int(doc_idx[d]), int(doc_idx[d + 1])
            sizes = np.asarray(store.sizes[first:last])
            lo = int(store.pointers[first]) // store.dtype.itemsize if last > first else 0
            builder.add_document(store.tokens[lo:lo + int(sizes.sum())], sizes)
            tokens += int(sizes.sum())
        builder.finalize(out_prefix + ".idx")
    except BaseException:
        builder.abort()
        raise
    return tokens


def write_samples(dataset, dtype: np.dtype, ids: np.ndarray, out_prefix: str) -> int:
    """Each GPT sample ``ids[k]`` (``dataset[i]["text"]``) as a one-sequence document."""
    builder = MMapIndexedDatasetBuilder(out_prefix + ".bin", dtype=dtype)
    tokens = 0
    try:
        for i in ids:
            text = dataset[int(i)]["text"]
            builder.add_document(text, [len(text)])
            tokens += len(text)
        builder.finalize(out_prefix + ".idx")
    except BaseException:
        builder.abort()
        raise
    return tokens


def sample_dataset(data_path: str, index_path: str, split: str, seq_length: int | None,
                   seed: int, train_samples: int | None, cache_dir: str | None = None):
    """The GPT training set a sample-granularity index numbers, and its fingerprint (as
    training computes it). BadInputError without the dataset flags."""
    from megatron.data.gpt_dataset import build_train_valid_test_datasets
    from megatron.data_efficiency.analyzer.analyzer import gpt_samples_fingerprint
    from megatron.errors import BadInputError
    if not seq_length or not train_samples:
        raise BadInputError(f"{index_path} indexes GPT samples: give the training dataset "
                            f"flags it was built with (--split --seq-length --seed "
                            f"--train-samples)")
    train, _, _ = build_train_valid_test_datasets([data_path], split, [train_samples, 0, 0],
                                                  seq_length, seed, cache_dir=cache_dir)
    if train is None:
        raise BadInputError(f"--split {split!r} leaves no training documents in {data_path}")
    fp = gpt_samples_fingerprint(data_path, split, seq_length, seed, train.doc_idx,
                                 train.sample_idx, train.shuffle_idx)
    return train, fp


def index_granularity(index_path: str) -> str:
    """``document`` or ``sample`` from a GPT index's meta.json (BadInputError otherwise)."""
    from megatron.errors import BadInputError
    meta = os.path.join(index_path, "meta.json")
    try:
        with open(meta) as f:
            m = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise BadInputError(f"metric index {index_path}: cannot read meta.json: {err}") from err
    g = m.get("granularity")
    if g not in ("document", "sample") or m.get("model", "gpt") != "gpt":
        raise BadInputError(f"metric index {index_path}: granularity {g!r}, model "
                            f"{m.get('model', 'gpt')!r}; this reads GPT document or sample "
                            f"indexes")
    return g


def write_manifest(path: str, manifest: dict) -> None:
    """JSON to a temporary name, then renamed (the store's completion mark)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def manifest_of(result: PruneResult, source: dict, index: MetricIndex,
                sel: Selection) -> dict:
    """The manifest's content (see the module docstring)."""
    return {"format": "megatron-de pruned store 1", "source": source,
            "index": {"path": os.path.abspath(index.path), "metric": index.metric,
                      "fingerprint": index.meta.get("fingerprint"),
                      "granularity": result.granularity},
            "selection": {k: v for k, v in asdict(sel).items() if v is not None},
            "kept": {"samples": result.kept, "of": result.total, "tokens": result.tokens_kept,
                     "of_tokens": result.tokens_total, "ids_sha256": result.kept_ids_sha256},
            "output_prefix": os.path.abspath(result.output_prefix)}
