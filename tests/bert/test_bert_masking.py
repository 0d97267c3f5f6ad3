"""BERT samples (segments, truncation, masking) depend only on (seed, sample index)."""
from __future__ import annotations

import numpy as np
import torch

from megatron.data.bert_dataset import build_train_valid_test_datasets
from megatron.data.data_loader import collate_samples
from megatron.tokenizer import build_tokenizer


def _train(data: dict, seed: int = 5):
    tok = build_tokenizer("BertWordPieceLowerCase", vocab_file=data["vocab"])
    train, _, _ = build_train_valid_test_datasets([data["data"]], "80,15,5", [64, 0, 0], 32,
                                                  0.15, 0.1, seed, tok, cache_dir=data["dir"])
    return train, tok


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_sample_independent_of_order_and_instance(bert_data):
    ds, tok = _train(bert_data)
    ids = list(range(40))
    forward = [ds[i] for i in ids]
    again, _ = _train(bert_data)
    backward = {i: again[i] for i in reversed(ids)}
    assert all(_same(forward[i], backward[i]) for i in ids)
    masked = sum(int((s["text"] == tok.mask).sum()) for s in forward)
    predicted = sum(int(s["loss_mask"].sum()) for s in forward)
    assert 0 < masked <= predicted        # some positions are [MASK]ed, all are predicted
    other, _ = _train(bert_data, seed=6)  # and the masking follows the seed
    assert not all(_same(forward[i], other[i]) for i in ids)


def test_workers_give_the_same_batches(bert_data):
    ds, _ = _train(bert_data)
    def batches(workers: int) -> list[dict]:
        loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=workers,
                                             collate_fn=collate_samples)
        return [b for b, _ in zip(loader, range(6))]
    for a, b in zip(batches(0), batches(2)):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
