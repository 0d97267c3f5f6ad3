"""Shared helpers for the analyzer tests: tiny random token stores, brute-force references,
and user metric functions (importable by the tool as ``analyzer_testlib:<name>``)."""

from __future__ import annotations

import json
import os

import numpy as np

from megatron.data.indexed_dataset import MMapIndexedDatasetBuilder

VOCAB = 23
FRACTION = 1 << 24  # kernels.VOC_FRACTION_BITS, restated so the reference stays independent


def random_docs(seed: int, n_docs: int = 120, multi_sequence: bool = True) -> list[list[np.ndarray]]:
    """Documents (lists of sequences) with many ties, empty and one-token documents."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        n_seq = int(rng.integers(1, 4)) if multi_sequence else 1
        doc = []
        for _ in range(n_seq):
            n = int(rng.choice([0, 1, 1, 2, 3, 8, 40]))
            doc.append(rng.zipf(1.5, n).clip(max=VOCAB) - 1)  # skewed ids 0..VOCAB-1
        docs.append(doc)
    return docs


def make_store(prefix: str, docs: list[list[np.ndarray]], dtype=np.uint16) -> str:
    builder = MMapIndexedDatasetBuilder(prefix + ".bin", dtype=dtype)
    for doc in docs:
        for seq in doc:
            builder.add_item(np.asarray(seq))
        builder.end_document()
    builder.finalize(prefix + ".idx")
    return prefix


def ref_voc(samples: list[np.ndarray], counts: np.ndarray) -> np.ndarray:
    """Documented rarity: sum over tokens of round((ln N - ln c_t) * 2^24), in units of 2^-24."""
    lut = np.zeros(len(counts), dtype=np.int64)
    seen = counts > 0
    lut[seen] = np.rint((np.log(counts.sum()) - np.log(counts[seen].astype(float))) * FRACTION)
    return np.array([int(lut[s].sum()) for s in samples], dtype=np.int64)


def ref_metrics(samples: list[np.ndarray], counts: np.ndarray) -> dict[str, np.ndarray]:
    """Brute-force values of every built-in metric, one Python step per sample."""
    seqlen = np.array([len(s) for s in samples], dtype=np.int64)
    acc = ref_voc(samples, counts)
    bits = int(acc.max(initial=0)).bit_length()
    shift = max(0, bits + int(seqlen.max(initial=0)).bit_length() - 63)
    return {"seqlen": seqlen, "voc": acc / FRACTION,
            "seqlen_voc": (seqlen << (bits - shift)) + (acc >> shift),
            "mean_token": np.array([s.mean() if len(s) else 0.0 for s in samples]),
            "distinct": np.array([len(set(s.tolist())) for s in samples], dtype=np.int64)}


def check_index(folder: str, expected: np.ndarray, fingerprint: str | None = None) -> None:
    """Every file of a metric index equals a plain argsort reference of ``expected``."""
    load = lambda name: np.load(os.path.join(folder, name))  # noqa: E731
    expected = np.asarray(expected)
    s2m = load("sample_to_metric.npy")
    assert s2m.dtype == (np.float64 if expected.dtype.kind == "f" else np.int64)
    np.testing.assert_array_equal(s2m, expected)
    ids = np.arange(len(expected))
    order = np.lexsort((ids, expected))  # by value, then sample id
    np.testing.assert_array_equal(load("sorted_samples.npy"), order)
    uniq = np.unique(expected)
    np.testing.assert_array_equal(load("values.npy"), uniq)
    offsets = np.searchsorted(expected[order], uniq, side="left")
    np.testing.assert_array_equal(load("offsets.npy"), np.append(offsets, len(expected)))
    with open(os.path.join(folder, "meta.json")) as f:
        meta = json.load(f)
    assert meta["num_samples"] == len(expected) and meta["num_values"] == len(uniq)
    if len(expected):
        assert meta["min"] == expected.min() and meta["max"] == expected.max()
    if fingerprint is not None:
        assert meta["fingerprint"] == fingerprint


# -- user metrics (the --metric-fn contract: tokens, offsets -> one value per sample) ----------
def mean_token(tokens: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    sums = np.array([tokens[a:b].sum() for a, b in zip(offsets[:-1], offsets[1:])], dtype=float)
    lens = np.diff(offsets)
    return np.where(lens > 0, sums / np.maximum(lens, 1), 0.0)


def distinct(tokens: np.ndarray, offsets: np.ndarray) -> list[int]:
    return [len(set(tokens[a:b].tolist())) for a, b in zip(offsets[:-1], offsets[1:])]


def wrong_length(tokens: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return np.zeros(len(offsets))  # one too many


def nan_for_empty(tokens: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    lens = np.diff(offsets).astype(float)
    return np.where(lens > 0, lens, np.nan)


def inf_for_long(tokens: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    lens = np.diff(offsets).astype(float)
    return np.where(lens > 30, np.inf, lens)
