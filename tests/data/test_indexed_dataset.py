"""Round trips and error cases of the Megatron mmap token store."""

import os
import pickle
import struct

import numpy as np
import pytest
import torch

from megatron.data.indexed_dataset import (
    DTYPE_CODES, MMapIndexedDataset, MMapIndexedDatasetBuilder, best_fitting_dtype,
    data_file_path, index_file_path)


def _build(prefix, docs, dtype=np.uint16):
    """docs: list of documents, each a list of sequences (lists of ids)."""
    b = MMapIndexedDatasetBuilder(data_file_path(prefix), dtype=dtype)
    for doc in docs:
        for seq in doc:
            b.add_item(seq)
        b.end_document()
    b.finalize(index_file_path(prefix))
    return MMapIndexedDataset(prefix)


def _random_docs(rng, n_docs, max_sents=3, max_len=20, vocab=1000):
    return [[rng.integers(0, vocab, rng.integers(0, max_len)).tolist()
             for _ in range(rng.integers(1, max_sents + 1))] for _ in range(n_docs)]


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.int64, np.uint8])
def test_round_trip(tmp_path, dtype):
    rng = np.random.default_rng(0)
    docs = _random_docs(rng, 30, vocab=200)
    ds = _build(str(tmp_path / "d"), docs, dtype)
    seqs = [s for d in docs for s in d]
    assert len(ds) == len(seqs) and ds.dtype == np.dtype(dtype)
    assert ds.sizes.dtype == np.int32 and ds.pointers.dtype == np.int64
    np.testing.assert_array_equal(ds.sizes, [len(s) for s in seqs])
    np.testing.assert_array_equal(ds.doc_idx, np.cumsum([0] + [len(d) for d in docs]))
    for i, s in enumerate(seqs):
        np.testing.assert_array_equal(ds[i], s)
    np.testing.assert_array_equal(ds[-1], seqs[-1])
    np.testing.assert_array_equal(ds.tokens, np.concatenate([np.asarray(s, dtype) for s in seqs]))
    assert not ds.tokens.flags.writeable
    for got, want in zip(ds[3:9], seqs[3:9]):
        np.testing.assert_array_equal(got, want)
    i = int(np.argmax(ds.sizes))
    np.testing.assert_array_equal(ds.get(i, 2, 5), seqs[i][2:7])
    np.testing.assert_array_equal(ds.get(i, 3), seqs[i][3:])
    with pytest.raises(IndexError):
        ds.get(i, 1, len(seqs[i]))
    with pytest.raises(IndexError):
        ds[len(seqs)]


def test_exact_bytes_match_megatron_layout(tmp_path):
    prefix = str(tmp_path / "x")
    b = MMapIndexedDatasetBuilder(data_file_path(prefix), dtype=np.uint16)
    b.add_item(torch.tensor([5, 6, 7]))
    b.add_item(np.array([8]))
    b.end_document()
    b.add_document([1, 2, 3, 4], lengths=[1, 3])
    b.finalize(index_file_path(prefix))
    raw = open(index_file_path(prefix), "rb").read()
    want = (b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, 8, 4, 3)
            + struct.pack("<4i", 3, 1, 1, 3) + struct.pack("<4q", 0, 6, 8, 10)
            + struct.pack("<3q", 0, 2, 4))
    assert raw == want
    assert open(data_file_path(prefix), "rb").read() == np.array([5, 6, 7, 8, 1, 2, 3, 4], "<u2").tobytes()
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]


def test_merge_and_pickle(tmp_path):
    rng = np.random.default_rng(1)
    a_docs, b_docs = _random_docs(rng, 5), _random_docs(rng, 7)
    _build(str(tmp_path / "a"), a_docs)
    _build(str(tmp_path / "b"), b_docs)
    m = MMapIndexedDatasetBuilder(str(tmp_path / "m.bin"), dtype=np.uint16)
    m.merge_file_(str(tmp_path / "a"))
    m.merge_file_(str(tmp_path / "b"))
    m.finalize(str(tmp_path / "m.idx"))
    ref = _build(str(tmp_path / "ref"), a_docs + b_docs)
    merged = pickle.loads(pickle.dumps(MMapIndexedDataset(str(tmp_path / "m"))))
    for name in ("sizes", "pointers", "doc_idx", "tokens"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(ref, name))
    bad = MMapIndexedDatasetBuilder(str(tmp_path / "c.bin"), dtype=np.int32)
    with pytest.raises(ValueError, match="dtype"):
        bad.merge_file_(str(tmp_path / "a"))
    bad.abort()
    assert not os.path.exists(tmp_path / "c.bin")


def test_empty_dataset(tmp_path):
    ds = _build(str(tmp_path / "e"), [])
    assert len(ds) == 0 and ds.num_documents == 0 and len(ds.tokens) == 0


def test_builder_rejects_ids_outside_dtype(tmp_path):
    b = MMapIndexedDatasetBuilder(str(tmp_path / "o.bin"), dtype=np.uint16)
    with pytest.raises(ValueError, match="do not fit"):
        b.add_item([1, 70000])
    b.abort()


def test_best_fitting_dtype():
    assert best_fitting_dtype(50257) == np.uint16
    assert best_fitting_dtype(65500) == np.int32
    assert best_fitting_dtype(None) == np.int32


@pytest.fixture
def good(tmp_path):
    prefix = str(tmp_path / "g")
    _build(prefix, [[[1, 2, 3], [4, 5]], [[6, 7, 8, 9]]], np.int32)
    return prefix


def _patch(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_missing_files(good, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.idx"):
        MMapIndexedDataset(str(tmp_path / "nope"))
    os.remove(data_file_path(good))
    with pytest.raises(FileNotFoundError, match=r"g\.bin"):
        MMapIndexedDataset(good)


def test_wrong_magic(good):
    _patch(index_file_path(good), 0, b"TNTIDX\x00\x00\x00")
    with pytest.raises(ValueError, match="bad magic"):
        MMapIndexedDataset(good)


def test_wrong_version(good):
    _patch(index_file_path(good), 9, struct.pack("<Q", 2))
    with pytest.raises(ValueError, match="version 2"):
        MMapIndexedDataset(good)


def test_unknown_dtype(good):
    assert 9 not in DTYPE_CODES
    _patch(index_file_path(good), 17, bytes([9]))
    with pytest.raises(ValueError, match="unknown dtype code 9"):
        MMapIndexedDataset(good)


def test_truncated_index(good):
    path = index_file_path(good)
    os.truncate(path, os.path.getsize(path) - 8)
    with pytest.raises(ValueError, match=r"g\.idx.*truncated"):
        MMapIndexedDataset(good)
    os.truncate(path, 10)
    with pytest.raises(ValueError, match="header"):
        MMapIndexedDataset(good)


def test_truncated_bin(good):
    path = data_file_path(good)
    os.truncate(path, os.path.getsize(path) - 4)
    with pytest.raises(ValueError, match=r"g\.bin.*size mismatch"):
        MMapIndexedDataset(good)
    os.truncate(path, os.path.getsize(path) - 1)
    with pytest.raises(ValueError, match="multiple"):
        MMapIndexedDataset(good)


def test_size_pointer_mismatch(good):
    path = index_file_path(good)
    _patch(path, 34, struct.pack("<i", 4))  # first size 3 -> 4: pointers no longer agree
    with pytest.raises(ValueError, match="pointer of sequence 1"):
        MMapIndexedDataset(good)
    _patch(path, 34, struct.pack("<i", 3))
    _patch(path, 34 + 3 * 4 + 2 * 8, struct.pack("<q", 100))  # last pointer out of place
    with pytest.raises(ValueError, match="pointer of sequence 2"):
        MMapIndexedDataset(good)
