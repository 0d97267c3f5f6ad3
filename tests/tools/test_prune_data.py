"""tools/prune_data.py: the pruned store holds exactly the kept documents (or samples), byte
for byte, with a manifest; it equals what a percentile_window admits; bad indexes are
refused without leaving output; and the pruned store trains."""
import hashlib
import json
import os

import numpy as np
import pytest
from tool_loader import load_tool

from megatron.data.indexed_dataset import MMapIndexedDataset, MMapIndexedDatasetBuilder
from megatron.data_efficiency.analyzer.analyzer import AnalyzerConfig, run_analyzer
from megatron.data_efficiency.analyzer.index_io import MetricIndex
from megatron.errors import BadInputError

prune_data = load_tool("prune_data")
VOCAB, SEQ, SEED = 64, 16, 5


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """300 documents, some of several sequences, lengths with many ties; a document-level
    seqlen index and a sample-level voc index over its GPT training samples."""
    root = tmp_path_factory.mktemp("prune")
    prefix = str(root / "src")
    rng = np.random.default_rng(3)
    b = MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for d in range(300):
        lengths = [int(x) for x in rng.integers(2, 30, size=1 + (d % 3 == 0))]
        tokens = rng.integers(0, VOCAB - 1, size=sum(lengths))
        b.add_document(tokens, lengths)
    b.finalize(prefix + ".idx")
    run_analyzer(AnalyzerConfig(data_prefix=prefix, save_path=str(root / "doc"),
                                metrics=("seqlen",), progress=False))
    run_analyzer(AnalyzerConfig(data_prefix=prefix, save_path=str(root / "smp"),
                                metrics=("total_vocab_freq", "voc"), granularity="sample",
                                split="90,10,0", seq_length=SEQ, seed=SEED, train_samples=40,
                                progress=False))
    return prefix, str(root / "doc" / "seqlen"), str(root / "smp" / "voc")


def _band_ids(index_path, lo, hi):
    """Brute force: ids at sorted positions [N//100*lo, N//100*hi) of (value, id)."""
    vals = np.asarray(MetricIndex.open(index_path).sample_to_metric)
    n = len(vals)
    order = np.lexsort((np.arange(n), vals))
    end = n if hi == 100 else n // 100 * hi
    return np.sort(order[n // 100 * lo:end])


def _doc_bytes(prefix, d):
    """Raw .bin bytes of document d of a store."""
    ds = MMapIndexedDataset(prefix)
    first, last = int(ds.doc_idx[d]), int(ds.doc_idx[d + 1])
    with open(prefix + ".bin", "rb") as f:
        f.seek(int(ds.pointers[first]))
        return f.read(int(ds.sizes[first:last].sum()) * ds.dtype.itemsize)


def test_document_band_is_copied_byte_for_byte_with_a_manifest(store, tmp_path):
    prefix, doc_index, _ = store
    out = str(tmp_path / "pruned")
    result = prune_data.main(["--data-path", prefix, "--index", doc_index,
                              "--keep-percentile", "25", "75", "--output-prefix", out])
    ids = _band_ids(doc_index, 25, 75)
    src, dst = MMapIndexedDataset(prefix), MMapIndexedDataset(out)
    assert dst.num_documents == len(ids) == result.kept == 150 and dst.dtype == src.dtype
    with open(out + ".bin", "rb") as f:
        assert f.read() == b"".join(_doc_bytes(prefix, int(d)) for d in ids)
    for k, d in enumerate(ids):             # the same sequences inside each document
        s0, s1 = int(src.doc_idx[d]), int(src.doc_idx[d + 1])
        np.testing.assert_array_equal(dst.sizes[dst.doc_idx[k]:dst.doc_idx[k + 1]],
                                      src.sizes[s0:s1])
    man = json.load(open(out + ".json"))
    assert man["kept"]["ids_sha256"] == hashlib.sha256(ids.astype("<i8").tobytes()).hexdigest()
    assert man["kept"]["tokens"] == len(dst.tokens) and man["kept"]["samples"] == 150
    assert man["selection"] == {"keep_percentile": [25.0, 75.0], "seed": 1234}
    assert man["index"]["metric"] == "seqlen" and man["index"]["granularity"] == "document"
    assert man["source"]["fingerprint"] == MetricIndex.open(doc_index).meta["fingerprint"]


@pytest.mark.parametrize("order", ["easy", "hard", "middle", "random"])
def test_keep_fraction_orders(store, tmp_path, order):
    prefix, doc_index, _ = store
    out = str(tmp_path / order)
    prune_data.main(["--data-path", prefix, "--index", doc_index, "--keep-fraction", "0.3",
                     "--order", order, "--output-prefix", out])
    man = json.load(open(out + ".json"))
    assert man["kept"]["samples"] == 90
    lo = {"easy": 0, "hard": 70, "middle": 35}.get(order)
    if lo is not None:
        ids = _band_ids(doc_index, lo, lo + 30)
    else:
        ids = np.sort(np.random.default_rng(1234).choice(300, 90, replace=False))
    assert man["kept"]["ids_sha256"] == hashlib.sha256(ids.astype("<i8").tobytes()).hexdigest()
    with open(out + ".bin", "rb") as f:
        assert f.read() == b"".join(_doc_bytes(prefix, int(d)) for d in ids)


def test_percentile_band_is_what_a_window_admits(store, tmp_path):
    """Pruning to [25, 75] keeps exactly the samples a percentile_window of [25, 75] draws."""
    from megatron.data_efficiency.curriculum.sampler import CurriculumSampler, SamplerMetric
    prefix, doc_index, _ = store
    out = str(tmp_path / "w")
    prune_data.main(["--data-path", prefix, "--index", doc_index,
                     "--keep-percentile", "25", "75", "--output-prefix", out])
    s = CurriculumSampler([SamplerMetric("seqlen", MetricIndex.open(doc_index),
                                         "percentile_window", 75, 25)],
                          lambda iteration: {"seqlen": 75}, 30, 5, seed=1)   # a static window
    drawn = set(np.concatenate([s.next_global_batch() for _ in range(20)]).tolist())
    want = _band_ids(doc_index, 25, 75)
    assert drawn == set(want.tolist())
    man = json.load(open(out + ".json"))
    assert man["kept"]["ids_sha256"] == hashlib.sha256(want.astype("<i8").tobytes()).hexdigest()


def test_sample_granularity_keeps_the_training_samples(store, tmp_path):
    from megatron.data.gpt_dataset import build_train_valid_test_datasets
    prefix, _, smp_index = store
    out = str(tmp_path / "smp")
    flags = ["--split", "90,10,0", "--seq-length", str(SEQ), "--seed", str(SEED),
             "--train-samples", "40"]
    with pytest.raises(BadInputError, match="training dataset flags"):
        prune_data.main(["--data-path", prefix, "--index", smp_index, "--keep-fraction", "0.5",
                         "--order", "hard", "--output-prefix", out])
    with pytest.raises(BadInputError, match="fingerprint"):     # other seed: other samples
        prune_data.main(["--data-path", prefix, "--index", smp_index, "--keep-fraction", "0.5",
                         "--order", "hard", "--output-prefix", out, *flags[:5], "6",
                         *flags[6:]])
    result = prune_data.main(["--data-path", prefix, "--index", smp_index, "--keep-fraction",
                              "0.5", "--order", "hard", "--output-prefix", out, *flags])
    train, _, _ = build_train_valid_test_datasets([prefix], "90,10,0", [40, 0, 0], SEQ, SEED)
    n = len(train)
    ids = np.sort(np.asarray(MetricIndex.open(smp_index).sorted_samples)[n - n // 2:])
    dst = MMapIndexedDataset(out)
    assert result.kept == len(ids) == dst.num_documents == len(dst)
    for k, i in enumerate(ids):
        np.testing.assert_array_equal(dst[k], train[int(i)]["text"])


def test_damaged_or_foreign_index_is_refused_and_nothing_is_written(store, tmp_path):
    import shutil
    prefix, doc_index, _ = store
    bad = str(tmp_path / "bad")
    shutil.copytree(doc_index, bad)
    ss = np.load(os.path.join(bad, "sorted_samples.npy"))
    ss[[0, -1]] = ss[[-1, 0]]                    # two ids swapped: no longer sorted
    np.save(os.path.join(bad, "sorted_samples.npy"), ss)
    out = str(tmp_path / "o")
    with pytest.raises(BadInputError, match="damaged"):
        prune_data.main(["--data-path", prefix, "--index", bad, "--keep-percentile", "0", "50",
                         "--output-prefix", out])
    ss[3] = ss[4]                                # an id twice
    np.save(os.path.join(bad, "sorted_samples.npy"), ss)
    with pytest.raises(BadInputError, match="permutation"):
        prune_data.main(["--data-path", prefix, "--index", bad, "--keep-percentile", "0", "50",
                         "--output-prefix", out])
    other = str(tmp_path / "other")                # another store: the fingerprint differs
    b = MMapIndexedDatasetBuilder(other + ".bin", dtype=np.uint16)
    for _ in range(300):
        b.add_document(np.arange(5), [5])
    b.finalize(other + ".idx")
    with pytest.raises(BadInputError, match="fingerprint"):
        prune_data.main(["--data-path", other, "--index", doc_index, "--keep-percentile", "0",
                         "50", "--output-prefix", out])
    assert not [f for f in os.listdir(tmp_path) if f.startswith("o.") or f.startswith("o.tmp")]


def test_pruned_store_trains(store, tmp_path):
    from megatron.core.enums import ModelType
    from megatron.training import pretrain
    import pretrain_gpt
    prefix, doc_index, _ = store
    out = str(tmp_path / "train")
    prune_data.main(["--data-path", prefix, "--index", doc_index, "--keep-percentile", "20",
                     "100", "--output-prefix", out])
    state = pretrain(pretrain_gpt.train_valid_test_datasets_provider, pretrain_gpt.model_provider,
                     ModelType.encoder_or_decoder, pretrain_gpt.forward_step, argv=[
                         "--num-layers", "2", "--hidden-size", "16", "--num-attention-heads",
                         "2", "--seq-length", str(SEQ), "--max-position-embeddings", str(SEQ),
                         "--micro-batch-size", "2", "--global-batch-size", "4",
                         "--train-iters", "3", "--lr", "1e-3", "--vocab-size", str(VOCAB),
                         "--data-path", out, "--split", "90,10,0", "--num-workers", "0",
                         "--eval-interval", "100", "--eval-iters", "1", "--log-interval", "1"])
    assert state.iteration == 3 and all(np.isfinite([x for _, x in state.history]))
