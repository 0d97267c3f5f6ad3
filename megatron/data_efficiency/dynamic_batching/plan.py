"""What token-budget batching puts into a step's plan, and where it is refused.

The ``StepPlanner`` (``step_plan.py``) decides each step; with ``dynamic_batching`` on, the
step's batch is batch ``iteration % B`` of the packed dataset (DeepSpeed's loader passes
over the same packing every epoch, and its LR scheduler wraps around ``batch_sizes``), so
a plan is a pure function of the packing and the iteration; with a curriculum it is the
step packed from the curriculum's draws (``stream.CurriculumPacking``, stateful). ``StepBatch`` is that part of
the plan: the step's samples and tokens, each rank's micro-batches (ids, lengths, the
length the batch is cut to) and the step's LR rule.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from megatron.data_efficiency.curriculum.transforms import BatchShape, cut_columns
from megatron.data_efficiency.dynamic_batching.packing import BatchLR, TokenBatches

LENGTH_MULTIPLE = 8   # a micro-batch is cut to its longest sample rounded up to this (seqreo's)


def refusal(enabled: bool, model: str, pipeline_stages: int, curriculum: bool,
            random_ltd: bool, picking_order: str = "dataloader") -> str | None:
    """Why token-budget batching cannot run with these settings (None: it can)."""
    if not enabled:
        return None
    where = "data_efficiency.data_sampling.dynamic_batching"
    if model != "bert":
        return (f"{where}: GPT training samples are windows of exactly --seq-length tokens "
                f"cut from the concatenated documents, so every sample has the same length "
                f"and there is nothing to pack; token-budget batches are built for BERT "
                f"(pretrain_bert.py), whose sentence pairs vary in length")
    if pipeline_stages > 1:
        return (f"{where}: with --pipeline-model-parallel-size > 1 the stages exchange "
                f"activations of a shape fixed per step, and a token-budget micro-batch "
                f"has its own rows and length (DeepSpeed pads every micro-batch of its "
                f"pipeline engine to one shape instead); use pipeline size 1")
    if curriculum and picking_order != "dataloader":
        return (f"{where}.sequence_picking_order {picking_order!r} beside "
                f"curriculum_learning: the curriculum's draws order the samples a step "
                f"packs (stream.py); leave it 'dataloader'")
    if random_ltd:
        return (f"{where}: beside data_routing.random_ltd: random-LTD's consumed tokens "
                f"(the layer-token LR schedule) and its kept length are planned for a step "
                f"of rows x one length, and a token-budget step has micro-batches of their "
                f"own lengths holding real tokens and padding; disable one of them")
    return None


@dataclass(frozen=True)
class StepBatch:
    """One step's token-budget batch: batch ``index`` of ``batches``.

    Attributes:
        batches: the packed dataset (every rank holds the same one).
        index: the batch this step trains on (``iteration % batches.num_batches``).
        lr: the step's LR rule (``lr_scaling_method`` from the global batch size to the
            step's samples).
        seq_length: ``--seq-length`` (the longest a micro-batch may be).
        truncate: a truncation curriculum's length of the step (seqtru, composed with
            the packing: ``stream.py``), which every sample is cut to first; None: none.
    """
    batches: TokenBatches
    index: int
    lr: BatchLR
    seq_length: int
    truncate: int | None = None

    @property
    def samples(self) -> int:
        return self.batches.batch_samples(self.index)

    @property
    def sample_ids(self) -> np.ndarray:
        """[samples] int64, the step's samples, unit after unit."""
        lo, hi = self.batches.span(self.index)
        return self.batches.sample_ids[lo:hi]

    @property
    def tokens(self) -> int:
        """Real tokens of the step (summed ``seqlen``, padding excluded)."""
        return self.batches.batch_tokens(self.index)

    @property
    def longest(self) -> int:
        """The length the step's longest micro-batch is cut to."""
        return self.cut_length(self.batches.batch_max_seqlen(self.index))

    def cut_length(self, longest_sample: int) -> int:
        """A micro-batch's length: its longest sample rounded up to ``LENGTH_MULTIPLE``,
        at most ``seq_length``."""
        m = LENGTH_MULTIPLE
        return min(self.seq_length, max(m, -(-int(longest_sample) // m) * m))

    def microbatch(self, dp_rank: int, dp_size: int, microbatch: int,
                   micro_batch_size: int) -> tuple[np.ndarray, int]:
        """(sample ids [rows], cut length) of ``dp_rank``'s micro-batch ``microbatch``."""
        ids, lens = self.batches.microbatch(self.index, dp_rank, dp_size, microbatch,
                                            micro_batch_size)
        return ids, self.cut_length(lens.max())


def cut_microbatch(batch: dict, ids: np.ndarray, length: int, where: str,
                   truncate: int | None = None) -> tuple[dict, BatchShape]:
    """A collated BERT micro-batch checked against the plan's ``ids`` and cut to
    ``length`` (its padding beyond ``length`` checked to be padding), after the
    truncation curriculum's cut to ``truncate`` (None: none).

    Raises:
        RuntimeError: other samples than planned, or real tokens past ``length`` (the
            seqlen metric does not describe these samples).
    """
    drawn = batch.get("sample_id")
    if drawn is None or drawn.tolist() != ids.tolist():
        got = None if drawn is None else drawn.tolist()
        raise RuntimeError(f"{where}: the feed produced samples {got}, the step plan's "
                           f"token-budget batch says {ids.tolist()}")
    s = int(batch["padding_mask"].shape[1])
    if truncate is not None and truncate < s:
        batch, s = cut_columns(batch, s, truncate), truncate
    mask = batch["padding_mask"]
    if length < s and bool(torch.any(mask[:, length:] != 0)):
        raise RuntimeError(f"{where}: samples {ids.tolist()} hold real tokens past {length}, "
                           f"the length their seqlen metric gives; the dynamic_batching "
                           f"metrics_path was built for other samples")
    return cut_columns(batch, s, length), BatchShape(len(ids), min(length, s))
