"""The analyzer over BERT training samples agrees with a brute force over BertDataset[idx]."""

import filecmp
import os
import subprocess
import sys

import numpy as np
import pytest

from megatron.data.bert_dataset import BertDataset
from megatron.data.dataset_utils import get_train_valid_test_split_
from megatron.data.indexed_dataset import MMapIndexedDataset, MMapIndexedDatasetBuilder
from megatron.data_efficiency.analyzer.analyzer import AnalyzerConfig
from megatron.data_efficiency.analyzer.bert_samples import (BertSampleParams,
                                                            bert_samples_fingerprint,
                                                            run_bert_analyzer)
from megatron.data_efficiency.analyzer.index_io import MetricIndex, dataset_fingerprint

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
PAD, CLS, SEP, MASK, VOCAB = 0, 1, 2, 3, 40
SEQ, SPLIT, SEED, TRAIN = 24, "80,20,0", 9, 150
METRICS = ("seqlen", "voc", "seqlen_voc", "total_vocab_freq")


class _Tok:
    cls, sep, mask, pad, vocab_size = CLS, SEP, MASK, PAD, VOCAB


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """Documents of 1..7 non-empty sentences of 1..14 skewed ids (4..VOCAB-1)."""
    prefix = str(tmp_path_factory.mktemp("bert_store") / "s")
    rng = np.random.default_rng(3)
    builder = MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for _ in range(60):
        for _ in range(int(rng.integers(1, 8))):
            n = int(rng.integers(1, 15))
            builder.add_item(4 + rng.zipf(1.4, n).clip(max=VOCAB - 4) - 1)
        builder.end_document()
    builder.finalize(prefix + ".idx")
    return prefix


def _run(store, out, binary_head=True, **kw):
    cfg = AnalyzerConfig(data_prefix=store, save_path=str(out), metrics=METRICS, granularity="sample",
                         split=SPLIT, seq_length=SEQ, seed=SEED, train_samples=TRAIN,
                         cache_dir=str(out / "cache"), progress=False, **kw)
    params = BertSampleParams(short_seq_prob=0.3, binary_head=binary_head)
    run_bert_analyzer(cfg, params)
    mapping = _dataset(store, out, params).samples_mapping   # what training would build
    return bert_samples_fingerprint(store, SPLIT, SEQ, SEED, mapping), params


def _dataset(store, out, params, seed=SEED) -> BertDataset:
    """The train BertDataset pretrain_bert.py would build."""
    indexed = MMapIndexedDataset(store)
    bounds = get_train_valid_test_split_(SPLIT, indexed.num_documents)
    return BertDataset("train", indexed, store, indexed.doc_idx[bounds[0]:bounds[1] + 1], TRAIN,
                       0.15, SEQ, params.short_seq_prob, seed, _Tok(), params.binary_head,
                       str(out / "cache"))


def _load(out, metric, fingerprint) -> np.ndarray:
    idx = MetricIndex.open(str(out / metric), expected_fingerprint=fingerprint)
    order = np.lexsort((np.arange(idx.num_samples), idx.sample_to_metric))
    assert np.array_equal(idx.sorted_samples, order)   # sorted by (value, id)
    return np.asarray(idx.sample_to_metric)


@pytest.mark.parametrize("binary_head", [True, False])
def test_metrics_match_brute_force(store, tmp_path, binary_head):
    fp, params = _run(store, tmp_path, binary_head)
    ds = _dataset(store, tmp_path, params)
    indexed = ds.indexed_dataset
    first, end = int(ds.samples_mapping[:, 0].min()), int(ds.samples_mapping[:, 1].max())
    split_tokens = np.concatenate([indexed[i] for i in range(first, end)]).astype(np.int64)
    counts = np.bincount(split_tokens, minlength=VOCAB)
    assert np.array_equal(np.load(tmp_path / "total_vocab_freq" / "counts.npy")[:VOCAB], counts)
    rarity = np.zeros(VOCAB)
    rarity[counts > 0] = np.log(counts.sum()) - np.log(counts[counts > 0])
    seqlen, voc = _load(tmp_path, "seqlen", fp), _load(tmp_path, "voc", fp)
    assert len(seqlen) == len(ds) >= TRAIN
    exact_checked = 0
    for i in range(len(ds)):
        sample = ds[i]
        assert seqlen[i] == sample["padding_mask"].sum()
        start, stop, target = ds.samples_mapping[i]
        group = np.concatenate([indexed[j] for j in range(start, stop)]).astype(np.int64)
        kept = min(len(group), target)
        assert voc[i] == pytest.approx(rarity[group].sum() * kept / len(group), rel=1e-6, abs=1e-5)
        if not sample["truncated"]:   # then voc is exactly the sample's unmasked real tokens
            original = np.where(sample["loss_mask"] == 1, sample["labels"], sample["text"])
            real = original[(sample["padding_mask"] == 1) & (original != CLS) & (original != SEP)]
            assert voc[i] == pytest.approx(rarity[real].sum(), rel=1e-6, abs=1e-5)
            exact_checked += 1
    assert exact_checked > 10
    keys = _load(tmp_path, "seqlen_voc", fp)   # orders by seqlen first, then voc
    order = np.lexsort((voc, seqlen))
    assert np.all(np.diff(keys[order]) >= 0)


def test_fingerprint_covers_bert_parameters(store, tmp_path):
    fp, params = _run(store, tmp_path)
    def other(short_seq_prob=0.3, binary_head=True, seed=SEED):
        ds = _dataset(store, tmp_path, BertSampleParams(short_seq_prob, binary_head), seed)
        return bert_samples_fingerprint(store, SPLIT, SEQ, seed, ds.samples_mapping)
    others = {other(short_seq_prob=0.1), other(binary_head=False), other(seed=SEED + 1),
              dataset_fingerprint([store], "sample", SPLIT, SEQ, SEED, TRAIN)}
    assert fp not in others and len(others) == 4
    with pytest.raises(ValueError, match="other data or sample-index parameters"):
        MetricIndex.open(str(tmp_path / "seqlen"), expected_fingerprint=others.pop())


def test_tool_one_and_two_ranks_agree(store, tmp_path):
    common = ["--data-path", store, "--granularity", "sample", "--model", "bert", "--split", SPLIT,
              "--seq-length", str(SEQ), "--seed", str(SEED), "--train-samples", str(TRAIN),
              "--short-seq-prob", "0.3", "--metrics", *METRICS, "--quiet",
              "--data-cache-path", str(tmp_path / "cache")]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    tool = [sys.executable, os.path.join(ROOT, "tools", "analyze_data.py")]
    one = subprocess.run(tool + common + ["--save-path", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert one.returncode == 0, one.stderr
    _run(store, tmp_path / "api")   # the tool writes what the API writes
    for metric in ("seqlen", "voc"):
        assert filecmp.cmp(tmp_path / "one" / metric / "sample_to_metric.npy",
                           tmp_path / "api" / metric / "sample_to_metric.npy", shallow=False)
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if not os.path.exists(mpiexec):
        pytest.skip("no mpiexec beside the interpreter: the two-rank half is not run")
    two = subprocess.run(tool + common + ["--save-path", str(tmp_path / "two"), "--num-workers", "2"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert two.returncode == 0, two.stderr
    for metric in METRICS:
        for name in os.listdir(tmp_path / "one" / metric):
            assert filecmp.cmp(tmp_path / "one" / metric / name, tmp_path / "two" / metric / name,
                               shallow=False), (metric, name)
    bad = subprocess.run(tool + ["--data-path", store, "--model", "bert", "--save-path",
                                 str(tmp_path / "x")], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "--model bert needs --granularity sample" in bad.stderr
