"""Cross entropy over logits split along the vocabulary across tensor-parallel ranks.

The embedding is padded past the real vocabulary (Megatron pads to a multiple of
``--make-vocab-size-divisible-by`` x TP). Padding ids are never targets, and here they
are never candidates either: given the real ``vocab_size``, their logits are masked to
-inf before the softmax, so the loss (and its gradient) does not depend on how many
padding rows a layout has or what they hold. A checkpoint re-padded for another TP size
(``tools/checkpoint_util.py``) therefore computes exactly the same loss.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from megatron.core import parallel_state
from megatron.core.tensor_parallel.utils import VocabUtility


def _all_reduce(x: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
    if parallel_state.get_tensor_model_parallel_world_size() > 1:
        dist.all_reduce(x, op=op, group=parallel_state.get_tensor_model_parallel_group())
    return x


def _local_vocab_range(per_partition: int) -> tuple[int, int]:
    return VocabUtility.vocab_range_from_per_partition_vocab_size(
        per_partition, parallel_state.get_tensor_model_parallel_rank(),
        parallel_state.get_tensor_model_parallel_world_size())


def mask_padded_vocab(vocab_parallel_logits: torch.Tensor,
                      vocab_size: int | None) -> torch.Tensor:
    """Set the logits of padding ids (global id >= ``vocab_size``) to -inf.

    Args:
        vocab_parallel_logits: [..., v/tp], this rank's vocabulary slice.
        vocab_size: the real vocabulary size; None keeps every entry.

    Returns:
        A new tensor when something is masked, else the input itself.
    """
    first = _first_padding_column(vocab_parallel_logits.size(-1), vocab_size)
    if first is None:
        return vocab_parallel_logits
    masked = vocab_parallel_logits.clone()
    masked[..., first:] = float("-inf")
    return masked


def _first_padding_column(per_partition: int, vocab_size: int | None) -> int | None:
    """This rank's first column holding a padding id (global id >= ``vocab_size``); None
    when the slice holds none (or ``vocab_size`` is None: nothing is padding)."""
    if vocab_size is None:
        return None
    start, end = _local_vocab_range(per_partition)
    return None if end <= vocab_size else max(vocab_size - start, 0)


class _VocabParallelCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, vocab_size):
        # Work in fp32 whatever the logits' dtype: the log-sum-exp needs the range. One fp32
        # working copy of the logits, changed in place (shifted, exponentiated, normalised),
        # as Megatron does: at a large vocabulary each [s, b, v] fp32 tensor is gigabytes.
        # A copy even for fp32 logits, so the caller's stay untouched.
        work = logits.to(torch.float32, copy=True)
        first = _first_padding_column(logits.size(-1), vocab_size)
        if first is not None:        # padding ids take no part in the softmax
            work[..., first:] = float("-inf")
        start, end = _local_vocab_range(logits.size(-1))
        logits_max = _all_reduce(work.max(dim=-1)[0], dist.ReduceOp.MAX)
        work.sub_(logits_max.unsqueeze(-1))
        outside = (target < start) | (target >= end)
        local_target = (target - start).masked_fill(outside, 0)
        predicted = work.gather(-1, local_target.unsqueeze(-1)).squeeze(-1)
        predicted = _all_reduce(predicted.masked_fill(outside, 0.0))
        torch.exp(work, out=work)    # exactly 0 at padding ids
        sum_exp = _all_reduce(work.sum(dim=-1))
        loss = torch.log(sum_exp) - predicted
        ctx.in_dtype = logits.dtype
        if ctx.needs_input_grad[0]:  # evaluation (no grad) needs no softmax
            softmax = work.div_(sum_exp.unsqueeze(-1))
            ctx.save_for_backward(softmax, local_target, outside)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        softmax, local_target, outside = ctx.saved_tensors
        # d loss / d logits = softmax - one_hot(target), the one-hot only on the owning rank.
        grad = softmax
        grad.scatter_add_(-1, local_target.unsqueeze(-1),
                          -(~outside).to(grad.dtype).unsqueeze(-1))
        grad.mul_(grad_loss.unsqueeze(-1))
        return grad.to(ctx.in_dtype), None, None


def vocab_parallel_cross_entropy(vocab_parallel_logits: torch.Tensor, target: torch.Tensor,
                                 vocab_size: int | None = None) -> torch.Tensor:
    """Per-token cross entropy where each rank holds a vocabulary slice of the logits.

    Args:
        vocab_parallel_logits: [s, b, v/tp] (any leading dims), this rank's vocab slice.
        target: [s, b] long, global token ids (< ``vocab_size``).
        vocab_size: the real vocabulary size; ids at or past it are padding and take no
            part in the softmax. None: every id of the padded vocabulary takes part.

    Returns:
        loss [s, b] in fp32, equal on every tensor-parallel rank.
    """
    return _VocabParallelCrossEntropy.apply(vocab_parallel_logits, target, vocab_size)
