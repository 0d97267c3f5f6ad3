"""GPT index maps against a brute-force port of Megatron's loops, caching, and the file lock."""

import multiprocessing
import os

import numpy as np
import pytest

from megatron.data import gpt_dataset
from megatron.data.dataset_utils import build_doc_idx, build_shuffle_idx
from megatron.data.gpt_dataset import GPTDataset, build_index_maps, build_train_valid_test_datasets
from megatron.data.indexed_dataset import (MMapIndexedDataset, MMapIndexedDatasetBuilder,
                                           data_file_path, index_file_path)


def make_store(prefix, sizes, seed=0, vocab=5000):
    rng = np.random.default_rng(seed)
    b = MMapIndexedDatasetBuilder(data_file_path(prefix), dtype=np.uint16)
    for n in sizes:
        b.add_item(rng.integers(0, vocab, n))
        b.end_document()
    b.finalize(index_file_path(prefix))
    return MMapIndexedDataset(prefix)


def reference_maps(documents, sizes, num_samples, seq_length, seed):
    """Megatron's _build_index_mappings with its C++ build_sample_idx as a plain Python loop."""
    tokens_per_epoch = int(sizes[documents].sum())
    num_epochs, total = 0, 0
    while True:
        num_epochs += 1
        total += tokens_per_epoch
        if (total - 1) // seq_length >= num_samples:
            break
    rng = np.random.RandomState(seed=seed)
    separate = False
    if num_epochs > 1:
        from_full = ((num_epochs - 1) * tokens_per_epoch - 1) // seq_length
        separate = num_samples - from_full < int(0.80 * ((tokens_per_epoch - 1) // seq_length))
    doc_idx = build_doc_idx(documents, num_epochs, rng, separate)
    n = (num_epochs * tokens_per_epoch - 1) // seq_length
    sample_idx = [(0, 0)]
    d, offset = 0, 0
    while len(sample_idx) <= n:
        remaining = seq_length + 1
        while remaining != 0:
            length = int(sizes[doc_idx[d]]) - offset
            remaining -= length
            if remaining <= 0:
                offset += remaining + length - 1
                remaining = 0
            else:
                d, offset = d + 1, 0
        sample_idx.append((d, offset))
    first = from_full if separate else n
    return doc_idx, np.array(sample_idx), build_shuffle_idx(first, n, rng)


@pytest.mark.parametrize("case", [
    # (sizes seed, number of docs, seq_length, num_samples)
    (0, 40, 16, 10), (1, 40, 7, 300), (2, 25, 64, 90), (3, 60, 5, 1000), (4, 10, 200, 7)])
def test_index_maps_match_megatron_reference(case):
    seed, n_docs, seq_length, num_samples = case
    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, 50, n_docs).astype(np.int32)  # includes empty documents
    sizes[0] = 0
    documents = np.arange(3, n_docs - 2, dtype=np.int32)
    got = build_index_maps(documents, sizes, num_samples, seq_length, seed=1234)
    want = reference_maps(documents, sizes, num_samples, seq_length, 1234)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert got[1].dtype == np.int32 and got[2].dtype == np.int64 and len(got[1]) - 1 >= num_samples


def test_samples_are_windows_of_the_shuffled_stream(tmp_path):
    rng = np.random.default_rng(5)
    ds = make_store(str(tmp_path / "s"), rng.integers(1, 30, 50))
    docs = np.arange(10, 45, dtype=np.int32)
    gpt = GPTDataset("train", str(tmp_path / "s"), docs, ds, num_samples=120, seq_length=13, seed=7)
    stream = np.concatenate([ds[int(d)] for d in gpt.doc_idx]).astype(np.int64)
    assert len(gpt) >= 120 and set(np.unique(gpt.doc_idx)) == set(docs)
    for idx in range(len(gpt)):
        sample = gpt[idx]
        k = int(gpt.shuffle_idx[idx])
        assert sample["sample_id"] == idx and sample["text"].dtype == np.int64
        np.testing.assert_array_equal(sample["text"], stream[k * 13:k * 13 + 14])
    with pytest.raises(IndexError):
        gpt[len(gpt)]


def test_cache_is_reused_and_keyed(tmp_path, monkeypatch):
    ds = make_store(str(tmp_path / "c"), [20] * 30)
    docs = np.arange(30, dtype=np.int32)
    first = GPTDataset("train", str(tmp_path / "c"), docs, ds, 50, 8, seed=1)
    files = sorted(p for p in os.listdir(tmp_path) if p.endswith(".npy"))
    assert len(files) == 3 and all("train_indexmap_50ns_8sl_1s_" in f for f in files)

    def fail(*args):
        raise AssertionError("index maps were rebuilt instead of loaded")
    monkeypatch.setattr(gpt_dataset, "build_index_maps", fail)
    again = GPTDataset("train", str(tmp_path / "c"), docs, ds, 50, 8, seed=1)
    for name in ("doc_idx", "sample_idx", "shuffle_idx"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    monkeypatch.undo()
    GPTDataset("train", str(tmp_path / "c"), docs[:20], ds, 50, 8, seed=1)   # other documents
    GPTDataset("train", str(tmp_path / "c"), docs, ds, 50, 8, seed=2)        # other seed
    cache = tmp_path / "cache"
    GPTDataset("valid", str(tmp_path / "c"), docs, ds, 50, 8, seed=1, cache_dir=str(cache))
    assert len([p for p in os.listdir(tmp_path) if p.endswith(".npy")]) == 9
    assert len(os.listdir(cache)) == 4  # 3 maps + lock file, no temp files
    rewritten = make_store(str(tmp_path / "c"), [10, 30] * 15)  # same count and token total
    fresh = GPTDataset("train", str(tmp_path / "c"), docs, rewritten, 50, 8, seed=1)
    assert not np.array_equal(fresh.sample_idx, first.sample_idx)  # stale maps not reused
    (tmp_path / "file").write_text("")
    uncached = GPTDataset("test", str(tmp_path / "c"), docs, ds, 50, 8, seed=1,
                          cache_dir=str(tmp_path / "file" / "sub"))  # cannot create: in memory
    np.testing.assert_array_equal(uncached.shuffle_idx, first.shuffle_idx)


def _racer(prefix, barrier, log_path, out_path):
    original = gpt_dataset.build_index_maps

    def slow_build(*args):
        with open(log_path, "a") as f:
            f.write(f"{os.getpid()}\n")
        import time
        time.sleep(0.3)  # keep the lock long enough for the other process to queue behind it
        return original(*args)
    gpt_dataset.build_index_maps = slow_build
    ds = MMapIndexedDataset(prefix)
    barrier.wait()
    g = GPTDataset("train", prefix, np.arange(len(ds), dtype=np.int32), ds, 200, 16, seed=3)
    np.save(out_path, np.asarray(g.sample_idx))


def test_two_processes_build_once(tmp_path):
    prefix = str(tmp_path / "r")
    make_store(prefix, np.full(40, 25))
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    log = str(tmp_path / "builds.log")
    procs = [ctx.Process(target=_racer, args=(prefix, barrier, log, str(tmp_path / f"out{i}.npy")))
             for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(open(log).read().split()) == 1
    np.testing.assert_array_equal(np.load(tmp_path / "out0.npy"), np.load(tmp_path / "out1.npy"))


def test_train_valid_test_splits(tmp_path):
    prefix = str(tmp_path / "t")
    make_store(prefix, np.full(100, 12))
    train, valid, test = build_train_valid_test_datasets([prefix], "80,15,5", [100, 20, 5], 10, 9)
    assert list(train.documents[[0, -1]]) == [0, 79] and list(valid.documents[[0, -1]]) == [80, 94]
    assert list(test.documents[[0, -1]]) == [95, 99]
    assert len(train) >= 100 and len(valid) >= 20 and len(test) >= 5
    _, none_valid, none_test = build_train_valid_test_datasets([prefix], "100,0,0", [10, 0, 0], 10, 9)
    assert none_valid is None and none_test is None


def test_blend(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    make_store(a, np.full(50, 30), seed=1)
    make_store(b, np.full(50, 30), seed=2)
    train, valid, _ = build_train_valid_test_datasets(["0.3", a, "0.7", b], "90,10,0",
                                                      [200, 30, 0], 16, 5)
    assert len(train) == 200 and len(valid) == 30
    assert abs(np.mean(train.dataset_index == 0) - 0.3) < 0.01
    single_b = build_train_valid_test_datasets([b], "90,10,0", [int(np.ceil(200 * 0.7 * 1.005)), 1, 0], 16, 5)[0]
    for idx in range(200):
        s = train[idx]
        assert s["sample_id"] == idx
        if s["dataset_id"] == 1:
            want = single_b[int(train.dataset_sample_index[idx])]["text"]
            np.testing.assert_array_equal(s["text"], want)
