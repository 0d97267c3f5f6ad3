"""The packing from the analyzer's ``seqlen`` metric, and the sampler that draws it.

``load_seqlens`` reads ``metrics_path``: this project's analyzer folder (``DIR/seqlen``,
its fingerprint checked against the training samples) or DeepSpeed's
``seqlen/seqlen_sample_to_metric`` pair (only the sample count can be checked). Every
rank reads the same file and packs it the same way (``build_token_batches``), so every
data-parallel rank derives the same plan without a collective and takes its share.

``TokenBatchSampler`` yields this rank's micro-batches of each step, read from the step
plans (``StepPlanner.step_batch(it)``): the planner decides, the sampler draws. Its
state is the step it is at (with a curriculum, also the state of the packing of its draws
before that step: ``stream.CurriculumPacking``); a checkpoint also records the packing's
fingerprint, so a resumed run with another packing (other data, config or seed) is
refused instead of training on other batches.
"""
from __future__ import annotations

import json
import os
from typing import Callable, Iterator

import numpy as np

from megatron.data_efficiency.dynamic_batching.config import DynamicBatchingConfig
from megatron.data_efficiency.dynamic_batching.packing import TokenBatches, pack

DEEPSPEED_SEQLEN = os.path.join("seqlen", "seqlen_sample_to_metric")


def load_seqlens(metrics_path: str, num_samples: int, fingerprint: str | None,
                 analyzer_command: str = "") -> np.ndarray:
    """[N] int64 ``seqlen`` of every training sample from ``metrics_path``.

    Raises:
        ValueError: no seqlen metric there (with the analyzer command that writes one),
            or one made for other samples (``FingerprintMismatch`` for ours).
    """
    ours = os.path.join(metrics_path, "seqlen")
    theirs = os.path.join(metrics_path, DEEPSPEED_SEQLEN)
    if os.path.isfile(os.path.join(ours, "meta.json")):
        from megatron.data_efficiency.analyzer.index_io import MetricIndex
        with open(os.path.join(ours, "meta.json")) as f:
            converted = json.load(f).get("source") == "deepspeed"   # no fingerprint: count
        index = MetricIndex.open(ours, fingerprint,
                                 expected_num_samples=num_samples if converted else None)
        values = np.asarray(index.sample_to_metric)
    elif os.path.isfile(theirs + ".idx"):
        from megatron.data_efficiency.analyzer.deepspeed_index import DeepSpeedIndexedDataset
        rows = DeepSpeedIndexedDataset(theirs)
        if np.any(rows.sizes != 1):
            raise ValueError(f"{theirs}: every row must hold one value (a "
                             f"single_value_per_sample metric)")
        values = np.asarray(rows.tokens)
    else:
        hint = f": {analyzer_command}" if analyzer_command else ""
        raise ValueError(f"dynamic_batching.metrics_path {metrics_path}: no seqlen metric "
                         f"(neither {ours}/ nor DeepSpeed's {theirs}.idx); build it with "
                         f"the analyzer, metric seqlen{hint}")
    if len(values) != num_samples:
        raise ValueError(f"dynamic_batching.metrics_path {metrics_path}: the seqlen metric "
                         f"describes {len(values)} samples but the training dataset has "
                         f"{num_samples}; it was built for other data")
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"dynamic_batching.metrics_path {metrics_path}: seqlen values must "
                         f"be integers, found {values.dtype}")
    return values.astype(np.int64)


def build_token_batches(config: DynamicBatchingConfig, seqlens: np.ndarray,
                        global_batch_size: int, seed: int,
                        log: Callable[[str], None] | None = None) -> TokenBatches:
    """Pack ``seqlens`` as the config says; ``log`` (rank 0's print) gets a summary, the
    left-out samples, and with ``verbose`` one line per step's batch."""
    batches = pack(seqlens, config.max_tokens, global_batch_size,
                   min_batch_size=config.min_batch_size, max_batch_size=config.max_batch_size,
                   order=config.sequence_picking_order, seed=seed)
    if log is None:
        return batches
    log(f" > dynamic batching: {len(seqlens)} samples packed into {batches.num_batches} "
        f"batches of {global_batch_size} units of at most {config.max_tokens} tokens "
        f"({config.sequence_picking_order} order, LR scaling {config.lr_scaling_method}); "
        f"{len(batches.left_out)} samples longer than max_tokens left out, "
        f"{batches.unpacked} not packed")
    if config.verbose:
        for k in range(batches.num_batches):
            lo = batches.unit_offsets[k * global_batch_size]
            hi = batches.unit_offsets[(k + 1) * global_batch_size]
            sizes = np.diff(batches.unit_offsets[k * global_batch_size:
                                                 (k + 1) * global_batch_size + 1])
            log(f" > dynamic batching: batch {k}: {batches.batch_samples(k)} samples, "
                f"{batches.batch_tokens(k)} tokens, samples per unit {sizes.tolist()}, "
                f"ids {batches.sample_ids[lo:hi].tolist()}")
    return batches


def check_num_epochs(num_epochs: float | None, train_iters: int, batches_per_pass: int,
                     source: str) -> None:
    """Refuse a run of more steps than ``num_epochs`` passes over the packing hold.

    Raises:
        BadConfigError: naming the steps and the bound.
    """
    if num_epochs is None or train_iters <= num_epochs * batches_per_pass:
        return
    from megatron.errors import BadConfigError
    raise BadConfigError(
        f"{source}: data_efficiency.data_sampling.num_epochs {num_epochs}: the run takes "
        f"{train_iters} steps, but the token-budget packing has {batches_per_pass} batches a "
        f"pass, {num_epochs * batches_per_pass:g} steps in {num_epochs} passes; raise "
        f"num_epochs or shorten the run")


class TokenBatchSampler:
    """This rank's micro-batches (lists of sample ids) of every step from ``first_step``.

    Args:
        step_batch: ``fn(iteration) -> StepBatch`` (the step plan's).
        num_microbatches: micro-batches per rank per step.
        fingerprint: the packing's (``TokenBatches.fingerprint``).
        stream: the packing of a curriculum's draws, whose state the checkpoint holds
            (None: the dataset packed once, pure in the step).
    """

    def __init__(self, step_batch: Callable, dp_rank: int, dp_size: int,
                 micro_batch_size: int, num_microbatches: int, first_step: int,
                 fingerprint: str, stream=None) -> None:
        self.step_batch = step_batch
        self.dp_rank, self.dp_size = dp_rank, dp_size
        self.micro_batch_size, self.num_microbatches = micro_batch_size, num_microbatches
        self.first_step = first_step
        self.fingerprint = fingerprint
        self.stream = stream

    def __iter__(self) -> Iterator[list[int]]:
        step = self.first_step
        while True:
            batch = self.step_batch(step)
            for m in range(self.num_microbatches):
                ids, _ = batch.microbatch(self.dp_rank, self.dp_size, m, self.micro_batch_size)
                yield ids.tolist()
            step += 1

    def state_dict(self, steps_consumed: int) -> dict:
        """The step the loop is at (a prefetching loader may have drawn ahead: the plan
        is pure in the step, or the stream's state before that step is kept) and the
        packing."""
        state = {"step": int(steps_consumed), "fingerprint": self.fingerprint}
        if self.stream is not None:
            state["stream"] = self.stream.state_dict(int(steps_consumed))
        return state

    def load_state_dict(self, state: dict) -> None:
        """Check a checkpoint's state against this run.

        Raises:
            ValueError: another packing, or another step than the loop's.
        """
        if state.get("fingerprint") != self.fingerprint:
            raise ValueError(f"dynamic batching: the checkpoint's packing "
                             f"{state.get('fingerprint')!r} differs from this run's "
                             f"{self.fingerprint!r} (other seqlen metric, dynamic_batching "
                             f"settings, seed or global batch size); resuming would train on "
                             f"other batches")
        if int(state["step"]) != self.first_step:
            raise ValueError(f"dynamic batching sampler checkpoint is at step {state['step']}, "
                             f"the run resumes at iteration {self.first_step}")
        if self.stream is not None:
            self.stream.load_state_dict(state["stream"])
