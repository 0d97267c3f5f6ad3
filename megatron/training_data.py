"""Datasets and iterators for pretrain(): sizes, which ranks read data, the micro-batch
feed that applies the data-efficiency runtime's batch transform and token-drop plan."""
from __future__ import annotations

import argparse
from typing import Callable, Iterator

import torch
import torch.distributed as dist

from megatron.core import parallel_state
from megatron.data.data_loader import build_pretraining_data_loader
from megatron.data_efficiency.runtime import DataEfficiencyRuntime


class MicrobatchFeed:
    """The iterator a schedule hands to ``forward_step_func`` for one step.

    Each ``next()`` reads one micro-batch from ``iterator`` (nothing on pipeline stages
    that read no data, where ``iterator`` is None), applies the runtime's batch transform
    and adds the runtime's ``token_drop_plan`` for that micro-batch, so every stage gets
    the plan even when it reads no data. ``runtime=None`` (evaluation) means no transform
    and no dropping. ``seq_length`` tells stages without data the step's sequence length.
    """

    def __init__(self, iterator: Iterator | None, runtime: DataEfficiencyRuntime | None,
                 iteration: int, seq_length: int) -> None:
        self.iterator = iterator
        self.seq_length = seq_length
        self.runtime = runtime
        self.iteration = iteration
        self.microbatch = 0

    def __iter__(self) -> "MicrobatchFeed":
        return self

    def __next__(self) -> dict:
        batch = {} if self.iterator is None else dict(next(self.iterator))
        plan = None
        if self.runtime is not None:
            if self.iterator is not None:
                batch = self.runtime.transform_batch(batch, self.iteration)
            plan = self.runtime.token_drop_plan(self.iteration, self.microbatch,
                                                batch.get("seq_length", self.seq_length))
        batch["token_drop_plan"] = plan
        batch.setdefault("seq_length", self.seq_length)
        self.microbatch += 1
        return batch


def microbatch_feeds(iterator: Iterator | None, runtime: DataEfficiencyRuntime | None,
                     iteration: int, seq_length: int,
                     num_chunks: int = 1) -> MicrobatchFeed | list[MicrobatchFeed]:
    """The feed(s) for one step: one ``MicrobatchFeed``, or one per model chunk under the
    interleaved schedule (``num_chunks`` > 1).

    Only the first virtual stage (chunk 0 of the first stage) and the last one (the last
    chunk of the last stage) read data; with two or more stages a rank holds at most one
    of them, so this rank's single data iterator goes to that chunk and the other chunks'
    feeds carry only the token-drop plan and the sequence length.
    """
    if num_chunks == 1:
        return MicrobatchFeed(iterator, runtime, iteration, seq_length)
    readers = set()
    if parallel_state.is_pipeline_first_stage(ignore_virtual=True):
        readers.add(0)
    if parallel_state.is_pipeline_last_stage(ignore_virtual=True):
        readers.add(num_chunks - 1)
    if len(readers) > 1:
        raise ValueError("interleaved pipeline: one rank holds both the first and the last "
                         "virtual stage; use --pipeline-model-parallel-size >= 2")
    return [MicrobatchFeed(iterator if c in readers else None, runtime, iteration, seq_length)
            for c in range(num_chunks)]


def train_valid_test_num_samples(args: argparse.Namespace) -> list[int]:
    """Megatron's dataset sizes: all training samples, and enough validation / test
    samples for every evaluation."""
    gbs = args.global_batch_size
    # train_iters is rounded up from --train-samples / --train-tokens: whole steps only.
    train = args.train_iters * gbs
    eval_interval = max(1, args.eval_interval or args.train_iters)
    valid = (args.train_iters // eval_interval + 1) * args.eval_iters * gbs
    if getattr(args, "eval_full", False):
        return [train, 1, 1]   # one epoch each: --eval-full reads the whole split once
    return [train, valid, args.eval_iters * gbs]


def _needs_data(every_stage: bool = False) -> bool:
    """Only the first and the last pipeline stage read batches (tokens / labels); with
    interleaving, whatever model chunk is current. ``every_stage``: models whose middle
    layers need the batch too (BERT's padding mask) read it on every stage."""
    return (every_stage or parallel_state.is_pipeline_first_stage(ignore_virtual=True)
            or parallel_state.is_pipeline_last_stage(ignore_virtual=True))


def _build_datasets(provider: Callable, sizes: list[int], every_stage: bool):
    """Rank 0 builds first (it writes the index caches), then the others read them."""
    initialized = dist.is_initialized()
    rank = dist.get_rank() if initialized else 0
    datasets = (None, None, None)
    if rank == 0 and _needs_data(every_stage):
        datasets = provider(sizes)
    if initialized:
        dist.barrier()
    if rank != 0 and _needs_data(every_stage):
        datasets = provider(sizes)
    return datasets


def build_train_valid_test_data_iterators(provider: Callable, args: argparse.Namespace,
                                          runtime: DataEfficiencyRuntime,
                                          consumed_samples: int):
    """Returns ``(train_iterator, make_valid_iterator, make_test_iterator)``.

    The train iterator resumes at ``consumed_samples``; the ``make_*`` callables return a
    fresh iterator from the start of their split (None on stages without data), and are
    themselves None when the split is empty.
    """
    sizes = train_valid_test_num_samples(args)
    every_stage = getattr(args, "model_type", "gpt") == "bert"
    train_ds, valid_ds, test_ds = _build_datasets(provider, sizes, every_stage)
    dp_rank = parallel_state.get_data_parallel_rank()
    dp_size = parallel_state.get_data_parallel_world_size()
    loader_kwargs = dict(micro_batch_size=args.micro_batch_size, num_workers=args.num_workers,
                         data_parallel_rank=dp_rank, data_parallel_size=dp_size)
    train_iterator = None
    if train_ds is not None:
        sampler = runtime.train_batch_sampler(train_ds, consumed_samples, args.micro_batch_size,
                                              dp_rank, dp_size)
        train_iterator = _iterate(build_pretraining_data_loader(
            train_ds, consumed_samples, batch_sampler=sampler, **loader_kwargs))
    elif _needs_data(every_stage):
        raise ValueError("the datasets provider returned no training dataset")

    valid, test = (EvalSplit(ds, loader_kwargs, args.global_batch_size)
                   for ds in (valid_ds, test_ds))
    return (train_iterator, valid if valid.available else None,
            test if test.available else None)


class EvalSplit:
    """A validation or test split: calling it gives a fresh iterator from the split's start
    (None on stages without data).

    Attributes:
        full_batches: complete global batches in the split, the most any rank holds (the
            middle pipeline stages hold no data but run evaluation's schedule in step).
        available: whether any rank holds samples of this split.
    """

    def __init__(self, dataset, loader_kwargs: dict, global_batch_size: int) -> None:
        self.dataset, self.loader_kwargs = dataset, loader_kwargs
        size = 0 if dataset is None else len(dataset)
        self.available = _max_over_ranks(float(size > 0)) > 0
        self.full_batches = int(_max_over_ranks(float(size // global_batch_size)))

    def __call__(self) -> Iterator | None:
        if self.dataset is None:
            return None
        return _iterate(build_pretraining_data_loader(self.dataset, 0, **self.loader_kwargs))


def _iterate(loader) -> Iterator:
    """``iter(loader)`` without touching the global torch RNG: a DataLoader draws its
    base seed from it, which would shift dropout after a resume (or an evaluation)."""
    with torch.random.fork_rng(devices=[]):
        return iter(loader)


def _max_over_ranks(value: float) -> float:
    """The largest ``value`` of all ranks (middle stages hold no split but must still run
    evaluation's schedule in step with the others)."""
    if dist.is_initialized():
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        value = t.item()
    return value
