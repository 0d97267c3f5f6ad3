"""Finetuning data: epochs of shuffled global batches, the validation-loss split.

The training order is a pure function of ``(seed, epoch, step)``, so a resumed run
reads exactly the batches the uninterrupted run would have read, and the global batch
of a step is the same whatever the data-parallel size (each rank takes its share of it).
"""
from __future__ import annotations

import itertools
from typing import Iterator

import torch

from megatron.data.data_loader import build_pretraining_data_loader
from megatron.training_data import EvalSplit


class EpochBatchSampler:
    """This data-parallel rank's micro-batches (lists of sample ids), step after step.

    Epoch ``e`` is ``torch.randperm(num_samples)`` drawn from a generator seeded with
    ``seed + e`` (the permutation Megatron's ``DistributedSampler.set_epoch(seed + e)``
    draws), cut into ``iters_per_epoch`` global batches; the ``num_samples %
    global_batch_size`` samples at its end are left out that epoch. Inside a global batch,
    micro-batch ``m`` of DP rank ``r`` is ids ``[(m * dp + r) * mbs, (m * dp + r + 1) * mbs)``
    (Megatron's pretraining order).

    Args:
        first_iteration: the step to start at (0, or the resumed iteration).
    """

    def __init__(self, num_samples: int, iters_per_epoch: int, train_iters: int,
                 global_batch_size: int, micro_batch_size: int, dp_rank: int, dp_size: int,
                 seed: int, first_iteration: int = 0) -> None:
        if iters_per_epoch < 1:
            raise ValueError(f"{num_samples} training examples make no global batch of "
                             f"{global_batch_size}")
        self.num_samples, self.iters_per_epoch = num_samples, iters_per_epoch
        self.train_iters, self.gbs, self.mbs = train_iters, global_batch_size, micro_batch_size
        self.dp_rank, self.dp_size, self.seed = dp_rank, dp_size, seed
        self.first_iteration = first_iteration

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The sample ids of epoch ``epoch`` in training order: int64 [num_samples]."""
        return torch.randperm(self.num_samples,
                              generator=torch.Generator().manual_seed(self.seed + epoch))

    def __len__(self) -> int:
        steps = max(0, self.train_iters - self.first_iteration)
        return steps * (self.gbs // (self.mbs * self.dp_size))

    def __iter__(self) -> Iterator[list[int]]:
        order, order_epoch = None, None
        per_chunk = self.mbs * self.dp_size
        for it in range(self.first_iteration, self.train_iters):
            epoch, step = divmod(it, self.iters_per_epoch)
            if epoch != order_epoch:
                order, order_epoch = self.epoch_order(epoch), epoch
            batch = order[step * self.gbs:(step + 1) * self.gbs]
            for start in range(0, self.gbs, per_chunk):
                mine = start + self.dp_rank * self.mbs
                yield batch[mine:mine + self.mbs].tolist()


def example_rows(batch: dict) -> dict:
    """A multiple-choice micro-batch ``[b, c, s]`` as model rows ``[b * c, s]`` (the
    choices of an example consecutive); a classification batch is returned as it is."""
    if batch["text"].dim() == 2:
        return batch
    return {k: (v.reshape(-1, v.shape[-1]) if k in ("text", "types", "padding_mask") else v)
            for k, v in batch.items()}


def train_iterator(dataset, sampler: EpochBatchSampler, num_workers: int) -> Iterator[dict]:
    """Collated training micro-batches in the sampler's order, as model rows
    (``--num-workers`` loader processes; the global torch RNG is left untouched, so
    dropout does not depend on whether the loader was started before or after a resume)."""
    loader = build_pretraining_data_loader(dataset, 0, sampler.mbs, sampler.dp_rank,
                                           sampler.dp_size, num_workers=num_workers,
                                           batch_sampler=sampler)
    with torch.random.fork_rng(devices=[]):
        batches = iter(loader)
    return (example_rows(batch) for batch in batches)


class CyclingSplit:
    """The validation examples as ``training.evaluate`` reads them: calling it gives an
    iterator from the start that wraps around (``--eval-iters`` may ask for more batches
    than the files hold, as Megatron's looped loader allows); ``full_batches`` is one pass
    in complete global batches (``--eval-full``)."""

    def __init__(self, dataset, micro_batch_size: int, global_batch_size: int, dp_rank: int,
                 dp_size: int, num_workers: int) -> None:
        kwargs = dict(micro_batch_size=micro_batch_size, num_workers=num_workers,
                      data_parallel_rank=dp_rank, data_parallel_size=dp_size)
        self.split = EvalSplit(dataset, kwargs, global_batch_size)
        self.full_batches = self.split.full_batches

    def __call__(self) -> Iterator[dict]:
        return itertools.chain.from_iterable(self.split() for _ in itertools.count())
