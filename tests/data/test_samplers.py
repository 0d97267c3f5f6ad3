"""Pretraining samplers (resume from consumed_samples) and the data loader's collate."""

import numpy as np
import pytest
import torch

from megatron.data.data_loader import build_pretraining_data_loader, collate_samples
from megatron.data.samplers import MegatronPretrainingRandomSampler, MegatronPretrainingSampler


def test_sequential_sampler_layout():
    ranks = [list(MegatronPretrainingSampler(10, 0, 2, r, 2)) for r in range(2)]
    assert ranks == [[[0, 1], [4, 5]], [[2, 3], [6, 7]]]  # ids 8, 9 do not fill a global batch
    assert list(MegatronPretrainingSampler(10, 0, 3, 0, 3, drop_last=False))[-1] == [9]


@pytest.mark.parametrize("consumed", [0, 6, 18])
def test_sequential_sampler_resume(consumed):
    full = [list(MegatronPretrainingSampler(40, 0, 3, r, 2)) for r in range(2)]
    resumed = [list(MegatronPretrainingSampler(40, consumed, 3, r, 2)) for r in range(2)]
    steps = consumed // 6
    assert resumed == [f[steps:] for f in full]


def test_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match="consumed_samples=10"):
        MegatronPretrainingSampler(10, 10, 1, 0, 1)
    with pytest.raises(ValueError, match="data_parallel_rank"):
        MegatronPretrainingSampler(10, 0, 1, 2, 2)


@pytest.mark.parametrize("sharding", [True, False])
def test_random_sampler_epochs_and_resume(sharding):
    total, m, dp = 22, 2, 2  # 20 active samples per epoch, 2 left over
    samplers = [MegatronPretrainingRandomSampler(total, 0, m, r, dp, sharding) for r in range(dp)]
    epoch0 = [list(s) for s in samplers]
    ids = sorted(i for rank in epoch0 for batch in rank for i in batch)
    assert len(ids) == len(set(ids)) == 20 and max(ids) < total
    epoch1 = [list(s) for s in samplers]  # consumed_samples carried on: a new shuffle
    assert epoch1 != epoch0 and all(s.consumed_samples == 40 for s in samplers)
    resumed = [list(MegatronPretrainingRandomSampler(total, 8, m, r, dp, sharding)) for r in range(dp)]
    assert resumed == [e[2:] for e in epoch0]  # 8 consumed = 2 global micro-batches


def test_collate():
    samples = [{"text": np.arange(5, dtype=np.int64) + i, "sample_id": i} for i in range(3)]
    batch = collate_samples(samples)
    assert batch["text"].dtype == torch.long and batch["text"].shape == (3, 5)
    assert batch["sample_id"].tolist() == [0, 1, 2]
    assert torch.equal(batch["text"][2], torch.arange(5) + 2)


class _Toy(torch.utils.data.Dataset):
    def __len__(self):
        return 50

    def __getitem__(self, idx):
        return {"text": np.full(9, idx, dtype=np.uint16), "sample_id": idx}


@pytest.mark.parametrize("workers", [0, 1])
def test_data_loader(workers):
    loader = build_pretraining_data_loader(_Toy(), consumed_samples=8, micro_batch_size=4,
                                           data_parallel_rank=1, data_parallel_size=2,
                                           num_workers=workers)
    batches = list(loader)
    assert batches[0]["sample_id"].tolist() == [12, 13, 14, 15]
    assert batches[0]["text"].dtype == torch.long and batches[0]["text"].shape == (4, 9)
    assert torch.equal(batches[0]["text"][:, 0], batches[0]["sample_id"])
    assert len(batches) == 5  # global batches at 8, 16, 24, 32, 40; 48..49 dropped
    assert build_pretraining_data_loader(None, 0, 1, 0, 1) is None
