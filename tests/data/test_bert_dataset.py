"""BERT samples: sentence grouping, NSP pairs, 80/10/10 masking, padding."""

from types import SimpleNamespace

import numpy as np
import pytest

from megatron.data.bert_dataset import (BertDataset, build_samples_mapping,
                                        build_train_valid_test_datasets)
from megatron.data.indexed_dataset import (MMapIndexedDataset, MMapIndexedDatasetBuilder,
                                           data_file_path, index_file_path)

TOK = SimpleNamespace(cls=1, sep=2, mask=3, pad=0, vocab_size=1000)


def make_sentence_store(prefix, n_docs, seed=0):
    """Documents of 1-6 sentences of 3-20 tokens (ids >= 10, so none is special)."""
    rng = np.random.default_rng(seed)
    b = MMapIndexedDatasetBuilder(data_file_path(prefix), dtype=np.uint16)
    for _ in range(n_docs):
        n = int(rng.integers(1, 7))
        lengths = rng.integers(3, 21, n)
        b.add_document(rng.integers(10, 1000, int(lengths.sum())), lengths)
    b.add_document(rng.integers(10, 1000, 700), [100, 600])  # a too-long sentence: skipped
    b.finalize(index_file_path(prefix))
    return MMapIndexedDataset(prefix)


def test_samples_mapping_groups_sentences_of_one_document(tmp_path):
    ds = make_sentence_store(str(tmp_path / "s"), 60)
    mapping = build_samples_mapping(ds.doc_idx, ds.sizes, 300, 61, 0.1, seed=3)
    assert len(mapping) >= 300 and mapping.dtype == np.int64
    doc_of = np.searchsorted(ds.doc_idx, mapping[:, :2] - [0, 1], side="right") - 1
    assert np.all(doc_of[:, 0] == doc_of[:, 1])              # never crosses a document
    assert np.all(mapping[:, 1] - mapping[:, 0] >= 2)         # two segments for NSP
    assert np.all((mapping[:, 2] >= 2) & (mapping[:, 2] <= 61))
    assert 0 < np.mean(mapping[:, 2] < 61) < 0.3              # ~10% short targets
    assert not np.any(doc_of[:, 0] == ds.num_documents - 1)   # long-sentence document skipped
    np.testing.assert_array_equal(mapping, build_samples_mapping(ds.doc_idx, ds.sizes, 300, 61, 0.1, 3))


def test_samples(tmp_path):
    prefix = str(tmp_path / "b")
    ds = make_sentence_store(prefix, 80)
    bert = BertDataset("train", ds, prefix, ds.doc_idx, 400, 0.15, 64, 0.1, 5, TOK)
    masked = replaced = kept = candidates = randoms = 0
    for idx in range(len(bert)):
        s = bert[idx]
        text, types, labels, loss = s["text"], s["types"], s["labels"], s["loss_mask"]
        n = int(s["padding_mask"].sum())
        assert text.shape == types.shape == (64,) and np.all(text[n:] == TOK.pad)
        assert text[0] == TOK.cls and text[n - 1] == TOK.sep and loss[0] == loss[n - 1] == 0
        assert np.all((labels == -1) == (loss == 0)) and s["sample_id"] == idx
        original = np.where(loss == 1, labels, text)[:n]
        seps = np.flatnonzero(original == TOK.sep)
        assert len(seps) == 2 and seps[1] == n - 1 and original[0] == TOK.cls
        assert np.all(types[:seps[0] + 1] == 0) and np.all(types[seps[0] + 1:n] == 1)
        start, end, _ = bert.samples_mapping[idx]
        group = np.concatenate([ds[i] for i in range(start, end)])
        a, b = original[1:seps[0]], original[seps[0] + 1:n - 1]
        if not s["truncated"]:
            np.testing.assert_array_equal(np.concatenate((b, a) if s["is_random"] else (a, b)), group)
        randoms += s["is_random"]
        candidates += n - 3
        masked += int(loss.sum())
        replaced += int(np.sum(text[loss == 1] == TOK.mask))
        kept += int(np.sum(text[loss == 1] == labels[loss == 1]))
    assert abs(randoms / len(bert) - 0.5) < 0.1
    assert abs(masked / candidates - 0.15) < 0.03
    assert abs(replaced / masked - 0.8) < 0.05 and abs(kept / masked - 0.1) < 0.05
    again = bert[7]
    assert all(np.array_equal(again[k], v) for k, v in bert[7].items())


def test_split_by_documents(tmp_path):
    prefix = str(tmp_path / "t")
    ds = make_sentence_store(prefix, 50)
    train, valid, test = build_train_valid_test_datasets([prefix], "80,20,0", [100, 20, 0], 32,
                                                         0.15, 0.1, 1, TOK)
    assert test is None and len(train) >= 100 and len(valid) >= 20
    first_valid_sentence = ds.doc_idx[int(round(0.8 * ds.num_documents))]
    assert train.samples_mapping[:, 1].max() <= first_valid_sentence
    assert valid.samples_mapping[:, 0].min() >= first_valid_sentence


def test_store_without_sentences_is_rejected(tmp_path):
    prefix = str(tmp_path / "g")
    b = MMapIndexedDatasetBuilder(data_file_path(prefix), dtype=np.uint16)
    for _ in range(5):
        b.add_item(np.arange(10, 30))
        b.end_document()
    b.finalize(index_file_path(prefix))
    ds = MMapIndexedDataset(prefix)
    with pytest.raises(ValueError, match="--split-sentences"):
        BertDataset("train", ds, prefix, ds.doc_idx, 10, 0.15, 32, 0.1, 1, TOK)


def test_blend_of_two_stores(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    make_sentence_store(a, 40, seed=1)
    make_sentence_store(b, 40, seed=2)
    train, valid, test = build_train_valid_test_datasets(["1", a, "3", b], "90,10,0", [80, 8, 0],
                                                         32, 0.15, 0.1, 1, TOK)
    assert len(train) == 80 and len(valid) == 8 and test is None
    assert abs(np.mean(train.dataset_index == 1) - 0.75) < 0.02
    assert train[5]["sample_id"] == 5 and train[5]["text"].shape == (32,)
