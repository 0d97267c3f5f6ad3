"""Datasets and iterators for pretrain(): sizes, which ranks read data, the micro-batch
feed that applies the data-efficiency runtime's batch transform and token-drop plan."""
from __future__ import annotations

from typing import Callable, Iterator

import torch
import torch.distributed as dist

from megatron.run_config import RunConfig
from megatron.core import parallel_state
from megatron.core.devices import accelerator_device, collective_device
from megatron.core.timers import NO_TIMERS, Timers
from megatron.data.data_loader import build_pretraining_data_loader
from megatron.data_efficiency.curriculum.transforms import BatchShape
from megatron.data_efficiency.runtime import DataEfficiencyRuntime, StepPlan


class MicrobatchFeed:
    """The iterator a schedule hands to ``forward_step_func`` for one step.

    Each ``next()`` reads one micro-batch from ``iterator`` (nothing on pipeline stages
    that read no data, where ``iterator`` is None), has the runtime transform it to the
    step's ``plan`` and check it against the plan, and adds the micro-batch's
    ``token_drop_plan`` (its indices drawn now for every dropping layer and moved to
    ``device`` in one non-blocking copy), so every stage gets the plan even when it reads
    no data. ``plan=None`` (evaluation) means no transform and no dropping, at
    ``seq_length``. ``observed`` collects the shapes the transform produced. Each ``next()``
    is timed as Megatron's ``batch-generator`` (level 2 of ``timers``).
    """

    def __init__(self, iterator: Iterator | None, runtime: DataEfficiencyRuntime | None,
                 plan: StepPlan | None, seq_length: int, micro_batch_size: int,
                 device: torch.device | str = "cpu", timers: Timers = NO_TIMERS) -> None:
        self.iterator = iterator
        self.runtime = runtime
        self.plan = plan
        self.seq_length = plan.seq_length if plan is not None else seq_length
        self.micro_batch_size = micro_batch_size
        self.device = device
        self.timers = timers
        self.microbatch = 0
        self.observed: list[BatchShape] = []

    def __iter__(self) -> "MicrobatchFeed":
        return self

    def __next__(self) -> dict:
        with self.timers.phase("batch-generator"):
            return self._next()

    def _next(self) -> dict:
        batch = {} if self.iterator is None else dict(next(self.iterator))
        seq, rows = self.seq_length, self.micro_batch_size
        if self.plan is not None and self.iterator is not None:
            batch, shape = self.runtime.prepare_microbatch(batch, self.plan,
                                                           self.micro_batch_size,
                                                           self.microbatch)
            self.observed.append(shape)
            seq, rows = shape.seq_length, shape.rows
        elif self.plan is not None:
            rows = self.micro_batch_size * self.plan.rows // self.plan.global_batch_size
        batch["token_drop_plan"] = (None if self.plan is None else self.runtime.token_drop_plan(
            self.plan, self.microbatch, rows, seq, self.device))
        batch.setdefault("seq_length", seq)
        self.microbatch += 1
        return batch


def microbatch_feeds(iterator: Iterator | None, runtime: DataEfficiencyRuntime | None,
                     plan: StepPlan | None, seq_length: int, micro_batch_size: int,
                     num_chunks: int = 1, timers: Timers = NO_TIMERS) -> list[MicrobatchFeed]:
    """The feeds for one step: one ``MicrobatchFeed`` per model chunk (one without the
    interleaved schedule).

    Only the first virtual stage (chunk 0 of the first stage) and the last one (the last
    chunk of the last stage) read data; with two or more stages a rank holds at most one
    of them, so this rank's single data iterator goes to that chunk and the other chunks'
    feeds carry only the token-drop plan and the sequence length.
    """
    device = accelerator_device()   # where the model runs: token-drop indices go there
    if num_chunks == 1:
        return [MicrobatchFeed(iterator, runtime, plan, seq_length, micro_batch_size, device,
                               timers)]
    readers = set()
    if parallel_state.is_pipeline_first_stage(ignore_virtual=True):
        readers.add(0)
    if parallel_state.is_pipeline_last_stage(ignore_virtual=True):
        readers.add(num_chunks - 1)
    if len(readers) > 1:
        raise ValueError("interleaved pipeline: one rank holds both the first and the last "
                         "virtual stage; use --pipeline-model-parallel-size >= 2")
    return [MicrobatchFeed(iterator if c in readers else None, runtime, plan, seq_length,
                           micro_batch_size, device, timers) for c in range(num_chunks)]


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


def build_train_valid_test_data_iterators(provider: Callable, config: RunConfig,
                                          runtime: DataEfficiencyRuntime,
                                          sizes: tuple[int, int, int], every_stage: bool,
                                          consumed_samples: int, iteration: int,
                                          data_efficiency_state: dict | None = None,
                                          train_iters: int | None = None):
    """Returns ``(train_iterator, make_valid_iterator, make_test_iterator)``.

    Args:
        sizes: samples each split must hold (``RunPlan.train_valid_test_num_samples``).
        every_stage: every pipeline stage reads the batches (BERT's padding mask).
        consumed_samples, iteration: where the run resumes; the default sampler starts at
            ``consumed_samples``, the curriculum sampler at ``iteration``, from the
            checkpoint's ``data_efficiency_state``.
        train_iters: the steps the run takes (``RunPlan.train_iters``), for the bound of
            ``data_sampling.num_epochs``.

    The ``make_*`` callables return a fresh iterator from the start of their split (None
    on stages without data), and are themselves None when the split is empty.
    """
    train_ds, valid_ds, test_ds = _build_datasets(provider, list(sizes), every_stage)
    dp_rank = parallel_state.get_data_parallel_rank()
    dp_size = parallel_state.get_data_parallel_world_size()
    mbs = config.training.micro_batch_size
    loader_kwargs = dict(micro_batch_size=mbs, num_workers=config.data.num_workers,
                         data_parallel_rank=dp_rank, data_parallel_size=dp_size,
                         shield_workers=config.training.exit_signal_handler)
    train_iterator = None
    if train_ds is not None:
        sampler = runtime.train_batch_sampler(train_ds, mbs, iteration,
                                              data_efficiency_state, train_iters)
        train_iterator = _iterate(build_pretraining_data_loader(
            train_ds, consumed_samples, batch_sampler=sampler,
            dataloader_type=config.data.dataloader_type,
            pin_memory=runtime.config.loader_pin_memory(torch.cuda.is_available()),
            **loader_kwargs))
    elif _needs_data(every_stage):
        raise ValueError("the datasets provider returned no training dataset")

    valid, test = (EvalSplit(ds, loader_kwargs, config.training.global_batch_size)
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
        t = torch.tensor([value], dtype=torch.float64, device=collective_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        value = t.item()
    return value
