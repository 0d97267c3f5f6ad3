"""Autograd-aware collectives over the tensor-parallel group.

Each public function is one autograd function whose backward is the transpose of its
forward: copy <-> all-reduce, split <-> all-gather, all-gather <-> reduce-scatter. The
group is passed explicitly or defaults to ``parallel_state``'s tensor-parallel group;
with one rank every function is the identity.

Tensor-parallel regions split the last (hidden) dimension; the sequence-parallel
functions split dimension 0 (the sequence of ``[s, b, h]``).
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from megatron.core import parallel_state


def _group(group):
    return parallel_state.get_tensor_model_parallel_group() if group is None else group


def _size(group) -> int:
    if not dist.is_initialized():
        return 1
    return dist.get_world_size(group=_group(group))


def _all_reduce(x: torch.Tensor, group) -> torch.Tensor:
    if _size(group) == 1:
        return x
    x = x.contiguous()
    dist.all_reduce(x, group=_group(group))
    return x


def _split(x: torch.Tensor, dim: int, group) -> torch.Tensor:
    """Keep this rank's chunk of ``x`` along ``dim``."""
    size = _size(group)
    if size == 1:
        return x
    if x.size(dim) % size != 0:
        raise ValueError(f"dimension {dim} of size {x.size(dim)} does not split over "
                         f"{size} tensor-parallel ranks")
    rank = dist.get_rank(group=_group(group))
    return x.chunk(size, dim=dim)[rank].contiguous()


def _gather(x: torch.Tensor, dim: int, group) -> torch.Tensor:
    """Concatenate every rank's ``x`` along ``dim`` (list-based: gloo has no tensor variant)."""
    size = _size(group)
    if size == 1:
        return x
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(parts, x, group=_group(group))
    return torch.cat(parts, dim=dim)


def _reduce_scatter(x: torch.Tensor, dim: int, group) -> torch.Tensor:
    """Sum over ranks, then keep this rank's chunk along ``dim``."""
    size = _size(group)
    if size == 1:
        return x
    if dist.get_backend(_group(group)) == "nccl" and dim == 0:
        out = torch.empty((x.size(0) // size,) + tuple(x.shape[1:]), dtype=x.dtype,
                          device=x.device)
        dist.reduce_scatter_tensor(out, x.contiguous(), group=_group(group))
        return out
    # gloo has no reduce-scatter: all-reduce then split gives the same numbers.
    return _split(_all_reduce(x.clone(), group), dim, group)


class _CopyToRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x

    @staticmethod
    def backward(ctx, grad):
        return _all_reduce(grad.clone() if _size(ctx.group) > 1 else grad, ctx.group), None


class _ReduceFromRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        return _all_reduce(x.clone() if _size(group) > 1 else x, group)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _ScatterToRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _split(x, -1, group)

    @staticmethod
    def backward(ctx, grad):
        return _gather(grad, -1, ctx.group), None


class _GatherFromRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _gather(x, -1, group)

    @staticmethod
    def backward(ctx, grad):
        return _split(grad, -1, ctx.group), None


class _ScatterToSequenceRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _split(x, 0, group)

    @staticmethod
    def backward(ctx, grad):
        return _gather(grad, 0, ctx.group), None


class _GatherFromSequenceRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group, tensor_parallel_output_grad):
        ctx.group, ctx.reduce = group, tensor_parallel_output_grad
        return _gather(x, 0, group)

    @staticmethod
    def backward(ctx, grad):
        # The gathered tensor feeds tensor-parallel compute, whose grads are partial sums.
        if ctx.reduce:
            return _reduce_scatter(grad, 0, ctx.group), None, None
        return _split(grad, 0, ctx.group), None, None


class _ReduceScatterToSequenceRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _reduce_scatter(x, 0, group)

    @staticmethod
    def backward(ctx, grad):
        return _gather(grad, 0, ctx.group), None


def copy_to_tensor_model_parallel_region(x: torch.Tensor, group=None) -> torch.Tensor:
    """Identity forward; all-reduce of the gradient backward."""
    return _CopyToRegion.apply(x, group)


def reduce_from_tensor_model_parallel_region(x: torch.Tensor, group=None) -> torch.Tensor:
    """All-reduce (sum) forward; identity backward."""
    return _ReduceFromRegion.apply(x, group)


def scatter_to_tensor_model_parallel_region(x: torch.Tensor, group=None) -> torch.Tensor:
    """Keep this rank's chunk of the last dim forward; all-gather backward."""
    return _ScatterToRegion.apply(x, group)


def gather_from_tensor_model_parallel_region(x: torch.Tensor, group=None) -> torch.Tensor:
    """All-gather along the last dim forward; keep this rank's chunk backward."""
    return _GatherFromRegion.apply(x, group)


def scatter_to_sequence_parallel_region(x: torch.Tensor, group=None) -> torch.Tensor:
    """``[s, b, h] -> [s/tp, b, h]`` forward; all-gather along dim 0 backward."""
    return _ScatterToSequenceRegion.apply(x, group)


def gather_from_sequence_parallel_region(x: torch.Tensor, tensor_parallel_output_grad: bool = True,
                                         group=None) -> torch.Tensor:
    """``[s/tp, b, h] -> [s, b, h]`` forward; reduce-scatter (or split) backward."""
    return _GatherFromSequenceRegion.apply(x, group, tensor_parallel_output_grad)


def reduce_scatter_to_sequence_parallel_region(x: torch.Tensor, group=None) -> torch.Tensor:
    """Sum over ranks and keep ``[s/tp, b, h]`` forward; all-gather along dim 0 backward."""
    return _ReduceScatterToSequenceRegion.apply(x, group)
