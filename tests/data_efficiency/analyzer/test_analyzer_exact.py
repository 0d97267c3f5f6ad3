"""Every analyzer output equals a brute-force NumPy reference, for both granularities."""

import os

import numpy as np
import pytest

import analyzer_testlib as lib
from megatron.data.gpt_dataset import build_train_valid_test_datasets
from megatron.data_efficiency.analyzer import kernels
from megatron.data_efficiency.analyzer.analyzer import AnalyzerConfig, fingerprint_of, run_analyzer

ALL = ("seqlen", "voc", "seqlen_voc", "total_vocab_freq")
USER = ("analyzer_testlib:mean_token", "analyzer_testlib:distinct")


def _run(prefix, out, **kw):
    cfg = AnalyzerConfig(prefix, str(out), metrics=ALL, metric_fns=USER, shard_tokens=97,
                         chunk_tokens=13, batch_tokens=50, progress=False, **kw)
    return cfg, run_analyzer(cfg)


def _check_all(cfg, samples, counts):
    np.testing.assert_array_equal(np.load(os.path.join(cfg.save_path, "total_vocab_freq", "counts.npy")),
                                  counts)
    fp = fingerprint_of(cfg)
    for name, expected in lib.ref_metrics(samples, counts).items():
        lib.check_index(os.path.join(cfg.save_path, name), expected, fp)


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_document_granularity_matches_reference(tmp_path, dtype):
    docs = lib.random_docs(seed=1)
    prefix = lib.make_store(str(tmp_path / "ds"), docs, dtype)
    samples = [np.concatenate(d) if d else np.zeros(0, np.int64) for d in docs]
    counts = np.bincount(np.concatenate(samples), minlength=lib.VOCAB)
    cfg, stats = _run(prefix, tmp_path / "out", vocab_size=lib.VOCAB)
    assert stats["shards_computed"] > 4  # several shards per pass really were exercised
    _check_all(cfg, samples, counts)
    assert sorted(os.listdir(cfg.save_path)) == sorted(set(ALL) | {"mean_token", "distinct"})


def test_sample_granularity_matches_gpt_dataset(tmp_path):
    docs = lib.random_docs(seed=2, multi_sequence=False)
    prefix = lib.make_store(str(tmp_path / "ds"), docs)
    cache = str(tmp_path / "cache")
    cfg, _ = _run(prefix, tmp_path / "out", granularity="sample", split="80,20,0", seq_length=9,
                  seed=5, train_samples=150, cache_dir=cache)
    train, _, _ = build_train_valid_test_datasets([prefix], "80,20,0", [150, 0, 0], 9, 5, cache_dir=cache)
    samples = [train[i]["text"] for i in range(len(train))]  # sample id = GPTDataset index
    split_tokens = np.concatenate([np.concatenate(d) for d in docs[:len(train.documents)]])
    counts = np.bincount(split_tokens, minlength=lib.VOCAB)  # p over the split's documents
    assert len(samples) >= 150 and len(np.unique(np.diff(train.sample_idx[:, 0]))) > 1
    _check_all(cfg, samples, counts)


def test_pad_token_excluded_from_seqlen(tmp_path):
    docs = lib.random_docs(seed=3)
    prefix = lib.make_store(str(tmp_path / "ds"), docs)
    cfg = AnalyzerConfig(prefix, str(tmp_path / "out"), metrics=("seqlen",), pad_token_id=0,
                         shard_tokens=50, chunk_tokens=7, progress=False)
    run_analyzer(cfg)
    expected = np.array([sum(int((s != 0).sum()) for s in d) for d in docs])
    lib.check_index(str(tmp_path / "out" / "seqlen"), expected)


def test_prefix_sums_any_chunking():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50, 1000).astype(np.uint16)
    lut = rng.integers(-(1 << 40), 1 << 40, 50)
    positions = np.unique(rng.integers(100, 901, 60))
    full = np.concatenate(([0], np.cumsum(lut[tokens[100:900]])))
    for chunk in (1, 7, 64, 5000):
        got = kernels.prefix_sums_at(tokens, 100, 900, positions, lut, "x", chunk)
        np.testing.assert_array_equal(got, full[positions - 100])


def test_token_outside_table_is_an_error():
    tokens = np.array([1, 2, 70000, 3], dtype=np.int32)
    with pytest.raises(ValueError, match="token id 70000 near token 0 is outside the vocabulary of 10"):
        kernels.prefix_sums_at(tokens, 0, 4, np.array([4]), np.ones(10, np.int64), "x.bin")
