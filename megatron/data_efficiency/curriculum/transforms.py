"""Curriculum batch transforms, applied to a collated *training* batch.

Each transform is pure: it returns a new batch dict plus ``BatchShape(rows, seq_length)``,
the rows and per-row input length the model will really see, which is what
``token_accounting.tokens_per_step`` needs. Evaluation and test batches are never
transformed: the caller (the data-efficiency runtime) only calls these on training data.

Batch layouts (what Megatron's datasets collate to):
* GPT: ``{"text": [b, s+1] int64, ...}``; inputs are ``text[:, :-1]`` and labels
  ``text[:, 1:]``, so ``s`` input tokens carry ``s`` next-token pairs.
* BERT: ``{"text", "types", "labels", "loss_mask", "padding_mask": [b, s], "is_random": [b]}``
  with ``padding_mask`` 1 on real tokens, 0 on padding (right padded).

Other 2-D tensors are cut along dim 1 when their length is the GPT ``s+1`` or ``s`` (or the
BERT ``s``); 1-D tensors (per-sample values such as ``sample_id``) stay per row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from megatron.core.devices import collective_device

Batch = dict[str, Any]


@dataclass(frozen=True)
class BatchShape:
    """Rows and input tokens per row of a (transformed) batch."""

    rows: int
    seq_length: int


def _gpt_seq(batch: Batch) -> int:
    text = batch.get("text")
    if not isinstance(text, torch.Tensor) or text.dim() != 2 or text.shape[1] < 2:
        raise ValueError("GPT batch needs 'text' of shape [b, s+1] with s >= 1")
    return text.shape[1] - 1


def _cut(batch: Batch, lengths: dict[int, int]) -> Batch:
    """Slice every 2-D tensor whose dim 1 is a key of ``lengths`` to the mapped length."""
    out = {}
    for key, val in batch.items():
        if isinstance(val, torch.Tensor) and val.dim() >= 2 and val.shape[1] in lengths:
            val = val[:, :lengths[val.shape[1]]].contiguous()
        out[key] = val
    return out


def cut_columns(batch: Batch, seq_length: int, length: int) -> Batch:
    """Every ``[b, seq_length, ...]`` tensor of ``batch`` cut to ``[b, length, ...]``."""
    return _cut(batch, {seq_length: length}) if length < seq_length else dict(batch)


def seqtru(batch: Batch, difficulty: int, model: str = "gpt") -> tuple[Batch, BatchShape]:
    """Truncate every sample to ``difficulty`` input tokens (sample count unchanged).

    GPT keeps ``d + 1`` tokens of ``text`` ([b, s+1] -> [b, d+1]) so that the model gets
    ``d`` inputs and ``d`` shifted labels, as Megatron-DeepSpeed's ``seqlen_truncate``.
    BERT cuts every [b, s] tensor to [b, d'] with ``d'`` = ``d`` rounded up to a multiple
    of 8 (``bert_seqtru_length``). ``d >= s`` leaves the batch unchanged.
    """
    d = int(difficulty)
    if d < 1:
        raise ValueError(f"seqtru difficulty must be >= 1 token, got {difficulty}")
    if model == "gpt":
        s = _gpt_seq(batch)
        if d >= s:
            return dict(batch), BatchShape(batch["text"].shape[0], s)
        return _cut(batch, {s + 1: d + 1, s: d}), BatchShape(batch["text"].shape[0], d)
    if model == "bert":
        b, s = batch["text"].shape
        d = bert_seqtru_length(d)
        if d >= s:
            return dict(batch), BatchShape(b, s)
        return _cut(batch, {s: d}), BatchShape(b, d)
    raise ValueError(f"seqtru: model must be 'gpt' or 'bert', got {model!r}")


def bert_seqtru_length(difficulty: int, multiple: int = 8) -> int:
    """BERT's seqtru length: the difficulty rounded up to a multiple of 8, as
    Megatron-DeepSpeed's pretrain_bert.py does (tensor-core shapes)."""
    return -(-int(difficulty) // multiple) * multiple


def seqres(batch: Batch, difficulty: int) -> tuple[Batch, BatchShape]:
    """GPT: reshape each sample into ``s // d`` rows of ``d`` input tokens.

    Row ``r`` of ``text`` ([b, s+1]) holds ``s`` next-token pairs. Chunk ``j`` of it is
    ``text[r, j*d : j*d + d + 1]``: inputs ``j*d .. j*d+d-1`` and their next tokens as
    labels, so consecutive chunks share one boundary token and no pair is lost except the
    remainder ``s % d`` pairs at the end of each sample, which are dropped. The result is
    ``text`` [b * (s // d), d + 1], chunks of one sample adjacent and in order; 2-D
    tensors of length ``s`` (input-aligned) are chunked the same way without the overlap,
    1-D tensors are repeated per chunk. ``d >= s`` leaves the batch unchanged.
    """
    d = int(difficulty)
    if d < 1:
        raise ValueError(f"seqres difficulty must be >= 1 token, got {difficulty}")
    s = _gpt_seq(batch)
    b = batch["text"].shape[0]
    if d >= s:
        return dict(batch), BatchShape(b, s)
    k = s // d
    # Start of chunk j is j*d; gather [b, k, d+1] windows with one index tensor.
    win = torch.arange(k).unsqueeze(1) * d + torch.arange(d + 1).unsqueeze(0)   # [k, d+1]
    out = {}
    for key, val in batch.items():
        if isinstance(val, torch.Tensor) and val.dim() >= 2 and val.shape[1] == s + 1:
            val = val[:, win].reshape(b * k, d + 1, *val.shape[2:])
        elif isinstance(val, torch.Tensor) and val.dim() >= 2 and val.shape[1] == s:
            val = val[:, :k * d].reshape(b * k, d, *val.shape[2:])
        elif isinstance(val, torch.Tensor) and val.dim() == 1 and val.shape[0] == b:
            val = val.repeat_interleave(k)
        out[key] = val
    return out, BatchShape(b * k, d)


def seqreo(batch: Batch, group: Any = None, multiple: int = 8) -> tuple[Batch, BatchShape]:
    """BERT: truncate the batch to its longest real sample, rounded up to ``multiple``.

    The length is agreed across ``group`` (the data-parallel group) with an all-reduce MAX
    so that every DP rank runs the same shape; ``group=None`` or no initialised
    ``torch.distributed`` means local only. Every rank of the group must call this. The
    agreed length travels on the group's device (NCCL takes CUDA tensors only); reading
    it back is the one host sync this transform needs.
    """
    mask = batch.get("padding_mask")
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        raise ValueError("seqreo needs a BERT batch with 'padding_mask' [b, s]")
    b, s = mask.shape
    real = (mask != 0).sum(dim=1)                                   # [b]
    longest = real.max().reshape(1) if b else torch.zeros(1, dtype=torch.long)
    if group is not None and torch.distributed.is_available() \
            and torch.distributed.is_initialized():
        longest = longest.to(collective_device(group), torch.long)
        torch.distributed.all_reduce(longest, op=torch.distributed.ReduceOp.MAX, group=group)
    length = min(s, -(-int(longest.item()) // multiple) * multiple)
    length = max(length, min(s, multiple))
    if length >= s:
        return dict(batch), BatchShape(b, s)
    return _cut(batch, {s: length}), BatchShape(b, length)


def shape_for_difficulty(transform: str | None, difficulty: float | None, global_batch_size: int,
                         seq_length: int, model: str = "gpt") -> BatchShape:
    """Rows and sequence length of a *global* batch under a transform, from the schedule.

    Lets the runtime count tokens (``tokens_per_step(shape.rows, shape.seq_length, ...)``)
    without looking at data. ``seqreo`` depends on the data, so it is not accepted here:
    count it from the shape ``seqreo`` returned.

    Args:
        transform: ``"seqtru"``, ``"seqres"`` or ``None`` (no transform).
        difficulty: the transform metric's difficulty in force (tokens).
        global_batch_size: samples per step before reshaping.
        seq_length: the model's full sequence length ``s``.
        model: ``"gpt"`` or ``"bert"`` (BERT's seqtru rounds up to a multiple of 8).
    """
    if model == "bert" and transform == "seqtru" and difficulty is not None:
        difficulty = bert_seqtru_length(difficulty)
    if transform is None or difficulty is None or int(difficulty) >= seq_length:
        return BatchShape(global_batch_size, seq_length)
    d = int(difficulty)
    if transform == "seqtru":
        return BatchShape(global_batch_size, d)
    if transform == "seqres":
        return BatchShape(global_batch_size * (seq_length // d), d)
    raise ValueError(f"shape_for_difficulty: transform {transform!r} has no schedule-only "
                     f"shape (expected seqtru, seqres or None)")
