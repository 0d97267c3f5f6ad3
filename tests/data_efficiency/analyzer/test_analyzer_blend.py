"""The analyzer over a blended --data-path: its sample ids are the training blend's, every
value equals the metric computed on the blend's own samples, and the fingerprint is the
one training computes of the same blend (and no other blend's)."""

import json
import os

import numpy as np
import pytest

import analyzer_testlib as lib
from megatron.data.gpt_dataset import build_train_valid_test_datasets
from megatron.data_efficiency.analyzer.analyzer import AnalyzerConfig
from megatron.data_efficiency.analyzer.blend import (blend_difference, run_blend_analyzer,
                                                     training_blend_fingerprint)

ALL = ("seqlen", "voc", "seqlen_voc", "total_vocab_freq")
USER = ("analyzer_testlib:mean_token", "analyzer_testlib:distinct")
SPLIT, SEQ, SEED, SAMPLES = "80,20,0", 9, 5, 150


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Two stores of different sizes and token widths (uint16, int32)."""
    root = tmp_path_factory.mktemp("blend_stores")
    a = lib.make_store(str(root / "a"), lib.random_docs(seed=3, multi_sequence=False))
    b = lib.make_store(str(root / "b"), lib.random_docs(seed=4, n_docs=60), np.int32)
    return a, b, str(root / "cache")


def _analyze(data_path, out, cache, **kw):
    kw = {"metrics": ALL, "granularity": "sample", **kw}
    cfg = AnalyzerConfig(" ".join(data_path), str(out), data_path=tuple(data_path), split=SPLIT, seq_length=SEQ,
                         seed=SEED, train_samples=SAMPLES, cache_dir=cache, shard_tokens=97,
                         chunk_tokens=13, progress=False, **kw)
    return cfg, run_blend_analyzer(cfg)


def _training_blend(data_path, cache, samples=SAMPLES):
    train, _, _ = build_train_valid_test_datasets(list(data_path), SPLIT, [samples, 0, 0], SEQ,
                                                  SEED, cache_dir=cache)
    return train


def test_blend_index_numbers_the_training_blend_and_equals_its_metrics(stores, tmp_path):
    a, b, cache = stores
    data_path = ["0.3", a, "0.7", b]
    cfg, stats = _analyze(data_path, tmp_path / "out", cache, metric_fns=USER, batch_tokens=50)
    blend = _training_blend(data_path, cache)
    assert stats["num_samples"] == len(blend) == SAMPLES and stats["shards_computed"] > 4
    samples = [blend[i]["text"] for i in range(len(blend))]    # sample id = the blend's index
    assert {blend[i]["dataset_id"] for i in range(len(blend))} == {0, 1}
    # p over every store's training documents together (one epoch each)
    split_tokens = [np.concatenate([ds.indexed_dataset.get(int(d)) for d in ds.documents])
                    for ds in blend.datasets]
    counts = np.bincount(np.concatenate(split_tokens).astype(np.int64), minlength=lib.VOCAB)
    np.testing.assert_array_equal(
        np.load(os.path.join(cfg.save_path, "total_vocab_freq", "counts.npy")), counts)
    fingerprint, description = training_blend_fingerprint(blend, SPLIT, SEQ, SEED)
    for name, expected in lib.ref_metrics(samples, counts).items():   # with --metric-fn's
        lib.check_index(os.path.join(cfg.save_path, name), expected, fingerprint)
    assert not os.path.exists(os.path.join(cfg.save_path, ".analyzer_work"))
    with open(os.path.join(cfg.save_path, "voc", "meta.json")) as f:
        meta = json.load(f)
    assert meta["blend"] == description and [p["weight"] for p in description] == [0.3, 0.7]
    assert blend_difference(meta, description, len(blend)) == ""


def test_fingerprint_covers_weights_stores_and_size(stores, tmp_path):
    """Each change training can make to the blend gives another fingerprint, and the
    difference is named."""
    a, b, cache = stores
    _, stats = _analyze(["0.3", a, "0.7", b], tmp_path / "out", cache)
    with open(os.path.join(str(tmp_path / "out"), "voc", "meta.json")) as f:
        meta = json.load(f)
    # 0.32 / 0.68 leaves both stores' sample maps as they are: only the weights differ
    changed = {"weights": (["0.32", a, "0.68", b], SAMPLES, "weights are [0.3, 0.7], this "
                                                            "run's [0.32, 0.68]"),
               "order": (["0.7", b, "0.3", a], SAMPLES, "store 1"),
               "size": (["0.3", a, "0.7", b], 2 * SAMPLES, f"numbers {SAMPLES} blend samples, "
                                                           f"this run builds {2 * SAMPLES}")}
    for what, (data_path, samples, named) in changed.items():
        blend = _training_blend(data_path, cache, samples)
        fingerprint, description = training_blend_fingerprint(blend, SPLIT, SEQ, SEED)
        assert fingerprint != stats["fingerprint"], what
        if what == "weights":
            assert [p["fingerprint"] for p in description] == \
                [p["fingerprint"] for p in meta["blend"]]
        assert named in blend_difference(meta, description, len(blend)), what
    assert "this run reads one store" in blend_difference(meta, None, SAMPLES)


def test_blend_refuses_what_it_cannot_index(stores, tmp_path, capsys):
    from tests.tools.tool_loader import load_tool
    a, b, cache = stores
    with pytest.raises(ValueError, match="is indexed at --granularity sample"):
        _analyze(["0.5", a, "0.5", b], tmp_path / "out", cache, granularity="document")
    tool = load_tool("analyze_data")
    for extra in (["--granularity", "document"], ["--granularity", "sample", "--model", "bert"]):
        with pytest.raises(SystemExit):
            tool.parse_args(["--data-path", "0.5", a, "0.5", b, "--save-path", "x", *extra])
        assert "a blend is indexed by its GPT training samples" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.parse_args(["--data-path", "0.5", a, b, "--save-path", "x"])
    assert "weight/prefix pairs" in capsys.readouterr().err
