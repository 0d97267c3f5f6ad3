"""Cross entropy over logits split along the vocabulary across tensor-parallel ranks."""
from __future__ import annotations

import torch
import torch.distributed as dist

from megatron.core import parallel_state
from megatron.core.tensor_parallel.utils import VocabUtility


def _all_reduce(x: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
    if parallel_state.get_tensor_model_parallel_world_size() > 1:
        dist.all_reduce(x, op=op, group=parallel_state.get_tensor_model_parallel_group())
    return x


class _VocabParallelCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target):
        # Work in fp32 whatever the logits' dtype: the log-sum-exp needs the range.
        logits32 = logits.float()
        logits_max = _all_reduce(logits32.max(dim=-1)[0], dist.ReduceOp.MAX)
        shifted = logits32 - logits_max.unsqueeze(-1)
        per_partition = logits.size(-1)
        start, end = VocabUtility.vocab_range_from_per_partition_vocab_size(
            per_partition, parallel_state.get_tensor_model_parallel_rank(),
            parallel_state.get_tensor_model_parallel_world_size())
        outside = (target < start) | (target >= end)
        local_target = (target - start).masked_fill(outside, 0)
        predicted = shifted.gather(-1, local_target.unsqueeze(-1)).squeeze(-1)
        predicted = _all_reduce(predicted.masked_fill(outside, 0.0))
        exp = shifted.exp()
        sum_exp = _all_reduce(exp.sum(dim=-1))
        loss = torch.log(sum_exp) - predicted
        softmax = exp.div_(sum_exp.unsqueeze(-1))
        ctx.in_dtype = logits.dtype
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
        return grad.to(ctx.in_dtype), None


def vocab_parallel_cross_entropy(vocab_parallel_logits: torch.Tensor,
                                 target: torch.Tensor) -> torch.Tensor:
    """Per-token cross entropy where each rank holds a vocabulary slice of the logits.

    Args:
        vocab_parallel_logits: [s, b, v/tp] (any leading dims), this rank's vocab slice.
        target: [s, b] long, global token ids.

    Returns:
        loss [s, b] in fp32, equal on every tensor-parallel rank.
    """
    return _VocabParallelCrossEntropy.apply(vocab_parallel_logits, target)
