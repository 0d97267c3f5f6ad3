"""Batch samplers of Megatron's pretraining loop: which sample ids each data-parallel rank reads.

Both samplers yield lists of ``micro_batch_size`` sample ids for one data-parallel rank and
resume from ``consumed_samples`` (the count of samples all ranks have trained on), which the
checkpoint stores; restarting with that count continues exactly where the run stopped.
"""

from __future__ import annotations

from typing import Iterator

import torch


def _check(total_samples: int, consumed_samples: int, micro_batch_size: int,
           data_parallel_rank: int, data_parallel_size: int) -> None:
    if total_samples <= 0:
        raise ValueError(f"no samples to train on (total_samples={total_samples})")
    if not 0 <= consumed_samples < total_samples:
        raise ValueError(f"consumed_samples={consumed_samples} is outside the dataset of "
                         f"{total_samples} samples (resuming past the end of the data?)")
    if micro_batch_size <= 0 or data_parallel_size <= 0:
        raise ValueError("micro_batch_size and data_parallel_size must be positive")
    if not 0 <= data_parallel_rank < data_parallel_size:
        raise ValueError(f"data_parallel_rank={data_parallel_rank} not in [0, {data_parallel_size})")


class MegatronPretrainingSampler:
    """Sequential ids: global micro-batch ``k`` is ids ``consumed + k*m*dp .. +m*dp``, of which
    this rank takes the slice ``[rank*m, (rank+1)*m)``. A last incomplete global micro-batch is
    dropped unless ``drop_last`` is False."""

    def __init__(self, total_samples: int, consumed_samples: int, micro_batch_size: int,
                 data_parallel_rank: int, data_parallel_size: int, drop_last: bool = True) -> None:
        _check(total_samples, consumed_samples, micro_batch_size, data_parallel_rank,
               data_parallel_size)
        self.total_samples, self.consumed_samples = total_samples, consumed_samples
        self.micro_batch_size, self.drop_last = micro_batch_size, drop_last
        self.data_parallel_rank, self.data_parallel_size = data_parallel_rank, data_parallel_size
        self.micro_batch_times_data_parallel_size = micro_batch_size * data_parallel_size

    def __len__(self) -> int:
        return self.total_samples

    def __iter__(self) -> Iterator[list[int]]:
        step = self.micro_batch_times_data_parallel_size
        lo = self.data_parallel_rank * self.micro_batch_size
        for start in range(self.consumed_samples, self.total_samples, step):
            batch = list(range(start, min(start + step, self.total_samples)))
            if len(batch) < step and self.drop_last:
                return
            if batch[lo:lo + self.micro_batch_size]:
                yield batch[lo:lo + self.micro_batch_size]


class MegatronPretrainingRandomSampler:
    """Megatron's ``--dataloader-type cyclic`` sampler: a fresh permutation every epoch.

    Epoch ``e`` is shuffled with ``torch.Generator().manual_seed(e)`` (as Megatron), optionally
    sharded so each rank permutes its own contiguous bucket (``data_sharding``).
    """

    def __init__(self, total_samples: int, consumed_samples: int, micro_batch_size: int,
                 data_parallel_rank: int, data_parallel_size: int,
                 data_sharding: bool = True) -> None:
        _check(total_samples, 0, micro_batch_size, data_parallel_rank, data_parallel_size)
        self.total_samples, self.consumed_samples = total_samples, consumed_samples
        self.micro_batch_size, self.data_sharding = micro_batch_size, data_sharding
        self.data_parallel_rank, self.data_parallel_size = data_parallel_rank, data_parallel_size
        self.micro_batch_times_data_parallel_size = micro_batch_size * data_parallel_size
        self.last_batch_size = total_samples % self.micro_batch_times_data_parallel_size
        if total_samples < self.micro_batch_times_data_parallel_size:
            raise ValueError(f"{total_samples} samples do not fill one global micro-batch")

    def __len__(self) -> int:
        return self.total_samples

    def _epoch_ids(self, epoch: int, done: int) -> list[int]:
        g = torch.Generator()
        g.manual_seed(epoch)
        m, dp = self.micro_batch_size, self.data_parallel_size
        if self.data_sharding:
            bucket = (self.total_samples // self.micro_batch_times_data_parallel_size) * m
            start = self.data_parallel_rank * bucket
            return [start + x for x in torch.randperm(bucket, generator=g)[done // dp:].tolist()]
        full = (self.total_samples // m) * m
        return torch.randperm(full, generator=g)[done:].tolist()[self.data_parallel_rank::dp]

    def __iter__(self) -> Iterator[list[int]]:
        """One epoch from the resume point (wrap the loader in a cycling iterator for more)."""
        active = self.total_samples - self.last_batch_size
        epoch, done = divmod(self.consumed_samples, active)
        if done % self.micro_batch_times_data_parallel_size:
            raise ValueError(f"consumed_samples={self.consumed_samples} is not a multiple of "
                             "micro_batch_size * data_parallel_size")
        ids = self._epoch_ids(epoch, done)
        for k in range(0, len(ids) - self.micro_batch_size + 1, self.micro_batch_size):
            self.consumed_samples += self.micro_batch_times_data_parallel_size
            yield ids[k:k + self.micro_batch_size]
        if self.consumed_samples % active:  # uneven tail of an unsharded epoch: next epoch
            self.consumed_samples = (epoch + 1) * active
