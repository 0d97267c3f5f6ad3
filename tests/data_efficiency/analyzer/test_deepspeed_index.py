"""DeepSpeed DataAnalyzer indexes: read directly, converted by tools/convert_deepspeed_index.py,
checked by sample count. Fixtures are written in DeepSpeed's layout by our own writer (always)
and by DeepSpeed's DataAnalyzer itself (when deepspeed is installed)."""

import json
import os
import sys

import numpy as np
import pytest

import analyzer_testlib as lib
from megatron.data.gpt_dataset import build_train_valid_test_datasets
from megatron.data.indexed_dataset import MMapIndexedDataset
from megatron.data_efficiency.analyzer import deepspeed_index as dsi
from megatron.data_efficiency.analyzer.analyzer import gpt_samples_fingerprint
from megatron.data_efficiency.analyzer.index_io import MetricIndex, write_metric_index

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
from tool_loader import load_tool  # noqa: E402

convert_tool = load_tool("convert_deepspeed_index")


def _write_ds_metric(folder, name, values, sample_dtype=None, value_dtype=None):
    """DeepSpeed's reduce output for per-sample ``values``: rows of ids per distinct value."""
    os.makedirs(folder, exist_ok=True)
    uniq = np.unique(values)
    rows = [np.flatnonzero(values == v) for v in uniq]
    sample_dtype = sample_dtype or dsi.fit_int_dtype(0, len(values) - 1)
    value_dtype = value_dtype or dsi.fit_int_dtype(int(uniq.min()), int(uniq.max()))
    prefix = os.path.join(folder, name)
    dsi.write_deepspeed_rows(prefix + dsi.SAMPLE_SUFFIX, rows, sample_dtype)
    dsi.write_deepspeed_rows(prefix + dsi.METRIC_SUFFIX, [[v] for v in uniq], value_dtype)
    return prefix


@pytest.mark.parametrize("value_dtype,low", [(np.uint16, 300), (np.uint64, 5), (np.int8, -40)])
def test_dtype_table_and_conversion(tmp_path, value_dtype, low):
    rng = np.random.default_rng(0)
    values = rng.integers(low, low + 60, size=301)
    prefix = _write_ds_metric(str(tmp_path / "ds" / "m"), "m", values, value_dtype=value_dtype)
    read = dsi.DeepSpeedIndexedDataset(prefix + dsi.METRIC_SUFFIX)
    assert read.dtype == np.dtype(value_dtype)
    if value_dtype in (np.uint16, np.uint64):   # DeepSpeed codes 6 / 8 mean float64 / uint16 to Megatron
        with pytest.raises(ValueError, match="pointer of sequence 1"):
            MMapIndexedDataset(prefix + dsi.METRIC_SUFFIX)
    paths = dsi.resolve_paths(prefix + dsi.SAMPLE_SUFFIX + ".idx")
    assert paths == dsi.resolve_paths(str(tmp_path / "ds" / "m")) == dsi.resolve_paths(prefix)
    out = str(tmp_path / "ours" / "m")
    index = dsi.convert_deepspeed_index(paths, out, expected_num_samples=301)
    lib.check_index(out, values)
    assert index.meta["source"] == "deepspeed" and index.meta["fingerprint"] is None
    direct = dsi.open_deepspeed_index(paths, expected_num_samples=301)
    for name in ("sample_to_metric", "sorted_samples", "values", "offsets"):
        np.testing.assert_array_equal(getattr(direct, name), getattr(index, name))


def test_sample_count_mismatch_names_both_counts(tmp_path):
    prefix = _write_ds_metric(str(tmp_path / "ds"), "voc", np.arange(50) % 7)
    paths = dsi.resolve_paths(prefix)
    with pytest.raises(ValueError, match="describes 50 samples but the training dataset has 49"):
        dsi.convert_deepspeed_index(paths, str(tmp_path / "out" / "voc"), expected_num_samples=49)
    assert not os.path.exists(tmp_path / "out" / "voc")
    with pytest.raises(ValueError, match="describes 50 samples but the training dataset has 51"):
        dsi.open_deepspeed_index(paths, expected_num_samples=51)
    dsi.convert_deepspeed_index(paths, str(tmp_path / "out" / "voc"))
    with pytest.raises(ValueError, match="describes 50 samples but the training dataset has 60"):
        MetricIndex.open(str(tmp_path / "out" / "voc"), "abcd", expected_num_samples=60)
    with pytest.raises(ValueError, match="no fingerprint"):
        MetricIndex.open(str(tmp_path / "out" / "voc"), "abcd")
    assert MetricIndex.open(str(tmp_path / "out" / "voc"), "abcd", 50).num_samples == 50
    # our own fingerprinted indexes still refuse a count they do not have
    write_metric_index(str(tmp_path / "own"), "own", np.arange(5), "f" * 16)
    with pytest.raises(ValueError, match="describes 5 samples but the training dataset has 6"):
        MetricIndex.open(str(tmp_path / "own"), "f" * 16, expected_num_samples=6)


def test_malformed_indexes_are_refused(tmp_path):
    d = str(tmp_path)
    dsi.write_deepspeed_rows(d + "/a_index_to_sample", [[0, 1], [1]], np.uint8)
    dsi.write_deepspeed_rows(d + "/a_index_to_metric", [[3], [4]], np.uint8)
    with pytest.raises(ValueError, match="not each of 0..2 exactly once"):
        dsi.read_sample_values(dsi.resolve_paths(d + "/a"))
    dsi.write_deepspeed_rows(d + "/b_index_to_sample", [[0], [1]], np.uint8)
    dsi.write_deepspeed_rows(d + "/b_index_to_metric", [[4], [3]], np.uint8)
    with pytest.raises(ValueError, match="not strictly ascending"):
        dsi.read_sample_values(dsi.resolve_paths(d + "/b"))
    dsi.write_deepspeed_rows(d + "/c_index_to_sample", [[0], [1]], np.uint8)
    with pytest.raises(FileNotFoundError, match="c_index_to_metric.idx"):
        dsi.resolve_paths(d + "/c")


def _gpt_train_set(tmp_path):
    prefix = lib.make_store(str(tmp_path / "store"), lib.random_docs(3, n_docs=60, multi_sequence=False))
    train, _, _ = build_train_valid_test_datasets([prefix], "90,10,0", [40, 0, 0], 8, 1234,
                                                  cache_dir=str(tmp_path / "cache"))
    return prefix, train


def test_tool_stamps_the_training_set_fingerprint(tmp_path):
    prefix, train = _gpt_train_set(tmp_path)
    n = len(train)
    values = np.array([int(train[i]["text"].sum()) for i in range(n)], dtype=np.int64)
    ds = _write_ds_metric(str(tmp_path / "ds" / "rarity"), "rarity", values)
    flags = ["--data-path", prefix, "--split", "90,10,0", "--seq-length", "8", "--seed", "1234",
             "--train-samples", "40", "--data-cache-path", str(tmp_path / "cache")]
    assert convert_tool.main([ds, str(tmp_path / "out")] + flags) == 0
    fp = gpt_samples_fingerprint(prefix, "90,10,0", 8, 1234, train.doc_idx, train.sample_idx,
                                 train.shuffle_idx)
    lib.check_index(str(tmp_path / "out" / "rarity"), values, fp)
    assert MetricIndex.open(str(tmp_path / "out" / "rarity"), fp).num_samples == n
    with pytest.raises(SystemExit, match=f"describes {n} samples but the training dataset has {n + 1}"):
        convert_tool.main([ds, str(tmp_path / "out2"), "--num-samples", str(n + 1)])
    with pytest.raises(SystemExit, match="describes"):   # another split: another sample count
        convert_tool.main([ds, str(tmp_path / "out3")] + flags[:2] + ["--split", "50,50,0"] + flags[4:])


def test_deepspeed_data_analyzer_output(tmp_path):
    """DeepSpeed's own map (two workers) + reduce, read and converted exactly."""
    pytest.importorskip("deepspeed")
    import torch
    from deepspeed.runtime.data_pipeline.data_sampling.data_analyzer import DataAnalyzer

    prefix, train = _gpt_train_set(tmp_path)
    counts = np.bincount(np.concatenate([train[i]["text"] for i in range(len(train))]),
                         minlength=lib.VOCAB) + 1

    class Texts(torch.utils.data.Dataset):
        def __len__(self):
            return len(train)

        def __getitem__(self, i):
            return torch.from_numpy(train[i]["text"].astype(np.int64))

    def rarity(data):          # Megatron-DeepSpeed's vocab_rarity shape: an integer per sample
        return torch.from_numpy(counts[data.numpy()].sum(axis=1) * 40).to(torch.long)

    save = str(tmp_path / "ds")
    kw = dict(num_workers=2, num_threads=1, batch_size=7, metric_names=["vocab_rarity"],
              metric_functions=[rarity], metric_types=["single_value_per_sample"],
              metric_dtypes=[torch.long], save_path=save)
    for worker in (0, 1):
        DataAnalyzer(Texts(), worker_id=worker, **kw).run_map()
    DataAnalyzer(Texts(), worker_id=0, **kw).run_reduce()
    expected = np.array([int(counts[train[i]["text"]].sum()) * 40 for i in range(len(train))])
    assert expected.max() > 255   # DeepSpeed stores the values as uint16: code 6
    with open(f"{save}/vocab_rarity/vocab_rarity_index_to_metric.idx", "rb") as f:
        assert f.read(18)[17] == 6
    merged = f"{save}/vocab_rarity/vocab_rarity_index_to_sample_percentile_merged"
    assert dsi.resolve_paths(merged) == dsi.resolve_paths(f"{save}/vocab_rarity")   # the GPT recipe's path
    order = dsi.DeepSpeedIndexedDataset(merged).tokens
    np.testing.assert_array_equal(order, np.lexsort((np.arange(len(expected)), expected)))
    out = str(tmp_path / "out")
    assert convert_tool.main([f"{save}/vocab_rarity", out, "--names", "voc",
                              "--num-samples", str(len(train))]) == 0
    lib.check_index(os.path.join(out, "voc"), expected)
    with open(os.path.join(out, "voc", "meta.json")) as f:
        assert json.load(f)["source"] == "deepspeed"
    with pytest.raises(SystemExit, match=f"describes {len(train)} samples"):
        convert_tool.main([f"{save}/vocab_rarity", str(tmp_path / "bad"),
                           "--num-samples", str(len(train) - 1)])


def test_tool_bert_training_set(tmp_path):
    """--model bert: the count and fingerprint are the train BertDataset's (as training expects)."""
    from megatron.data.bert_dataset import BertDataset
    from megatron.data.dataset_utils import get_train_valid_test_split_
    from megatron.data.indexed_dataset import MMapIndexedDatasetBuilder
    from megatron.data_efficiency.analyzer.bert_samples import bert_samples_fingerprint

    prefix = str(tmp_path / "sent")
    rng = np.random.default_rng(5)
    builder = MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for _ in range(40):
        for _ in range(int(rng.integers(1, 6))):
            builder.add_item(4 + rng.integers(0, 30, int(rng.integers(1, 12))))
        builder.end_document()
    builder.finalize(prefix + ".idx")

    class Tok:
        cls, sep, mask, pad, vocab_size = 1, 2, 3, 0, 40

    indexed = MMapIndexedDataset(prefix)
    lo, hi = get_train_valid_test_split_("80,20,0", indexed.num_documents)[:2]
    train = BertDataset("train", indexed, prefix, indexed.doc_idx[lo:hi + 1], 60, 0.15, 20, 0.2,
                        7, Tok(), True, str(tmp_path / "cache"))
    n = len(train.samples_mapping)
    ds = _write_ds_metric(str(tmp_path / "ds" / "vocab_rarity"), "vocab_rarity", np.arange(n) % 9)
    flags = ["--model", "bert", "--data-path", prefix, "--split", "80,20,0", "--seq-length", "20",
             "--seed", "7", "--train-samples", "60", "--short-seq-prob", "0.2",
             "--data-cache-path", str(tmp_path / "cache")]
    assert convert_tool.main([ds, str(tmp_path / "out"), "--names", "voc"] + flags) == 0
    fp = bert_samples_fingerprint(prefix, "80,20,0", 20, 7, train.samples_mapping)
    assert MetricIndex.open(str(tmp_path / "out" / "voc"), fp).num_samples == n
    with pytest.raises(SystemExit, match="describes"):     # another short-seq-prob: other samples
        convert_tool.main([ds, str(tmp_path / "out2")] + flags[:-4] + ["--short-seq-prob", "0.9"]
                          + flags[-2:])
