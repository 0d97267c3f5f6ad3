"""Moving routed tokens to their experts and back: local permutation and all-to-all.

Tokens are sorted by global expert id, so the tokens for expert-parallel rank ``r``
(experts ``r * E_local .. (r + 1) * E_local - 1``) are one contiguous run; an all-to-all
over the expert-parallel group hands every rank the tokens of its own experts.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


class _AllToAll(torch.autograd.Function):
    """``all_to_all_single`` with given split sizes; backward sends the gradients back."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group, send_splits: list[int],
                recv_splits: list[int]) -> torch.Tensor:
        ctx.group, ctx.send_splits, ctx.recv_splits = group, send_splits, recv_splits
        out = x.new_empty((sum(recv_splits),) + tuple(x.shape[1:]))
        dist.all_to_all_single(out, x.contiguous(), recv_splits, send_splits, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        back = grad.new_empty((sum(ctx.send_splits),) + tuple(grad.shape[1:]))
        dist.all_to_all_single(back, grad.contiguous(), ctx.send_splits, ctx.recv_splits,
                               group=ctx.group)
        return back, None, None, None


def all_to_all(x: torch.Tensor, group, send_splits: list[int],
               recv_splits: list[int]) -> torch.Tensor:
    """Autograd all-to-all of rows of ``x`` ([n, *]) over ``group``."""
    return _AllToAll.apply(x, group, send_splits, recv_splits)


def exchange_counts(local_counts: torch.Tensor, group, ep_size: int) -> torch.Tensor:
    """Tell every expert-parallel rank how many tokens it gets from each rank.

    Args:
        local_counts: [E] long, this rank's kept assignments per global expert.
        group: the expert-parallel group.
        ep_size: its size.

    Returns:
        [ep, E_local] long: row ``r`` = tokens rank ``r`` sends to each of my experts.
    """
    received = torch.empty_like(local_counts)
    dist.all_to_all_single(received, local_counts.contiguous(), group=group)
    return received.view(ep_size, -1)


def sort_by_expert(expert_ids: torch.Tensor) -> torch.Tensor:
    """Stable permutation that groups rows by expert id (token order kept within one)."""
    return torch.argsort(expert_ids, stable=True)


def source_major_to_expert_major(counts: torch.Tensor) -> torch.Tensor:
    """Row permutation from (source rank, local expert) order to (local expert, source).

    Args:
        counts: [ep, E_local] rows per (source rank, local expert), as received.

    Returns:
        Long index ``p`` so that ``rows[p]`` is grouped by local expert.
    """
    ep, local = counts.shape
    flat = counts.reshape(-1)
    starts = torch.cumsum(flat, 0) - flat
    pieces = [torch.arange(int(starts[r * local + e]), int(starts[r * local + e] + flat[r * local + e]))
              for e in range(local) for r in range(ep)]
    if not pieces:
        return torch.zeros(0, dtype=torch.long)
    return torch.cat(pieces)
