"""Gradient norm over all model-parallel ranks, and clipping by it.

Every parameter is counted exactly once across the tensor- and pipeline-parallel ranks:
a parameter without ``tensor_model_parallel`` is replicated on every TP rank, so only TP
rank 0 counts it; the copy of the word embedding that the last pipeline stage keeps for
the output layer (``shared_embedding``) is counted on the first stage only.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.distributed as dist

from megatron.core import parallel_state
from megatron.core.distributed.grads import counts_toward_grad_norm, grad_buffer


def get_grad_norm(params: Iterable[torch.nn.Parameter], norm_type: float = 2.0,
                  model_parallel_group=None) -> float:
    """Total gradient norm of ``params`` over the model-parallel group.

    Args:
        params: parameters whose ``.grad`` (or ``.main_grad``) to measure.
        norm_type: 2.0 or ``inf``.
        model_parallel_group: the TP x PP group; ``None`` uses parallel_state's when
            torch.distributed is initialised, else no reduction.

    Returns:
        The norm as a Python float (``nan`` / ``inf`` when a gradient is not finite).
    """
    grads = [g for p in params if (g := grad_buffer(p)) is not None
             and counts_toward_grad_norm(p)]
    if model_parallel_group is None and dist.is_available() and dist.is_initialized():
        model_parallel_group = parallel_state.get_model_parallel_group()
    device = grads[0].device if grads else torch.device("cpu")
    if norm_type == math.inf:
        local = (torch.stack([g.detach().abs().max().float() for g in grads]).max()
                 if grads else torch.zeros((), device=device))
        op = dist.ReduceOp.MAX if dist.is_available() else None
    else:
        norms = torch._foreach_norm([g.detach() for g in grads], norm_type) if grads else []
        local = (torch.stack([n.float() for n in norms]) ** norm_type).sum() if grads \
            else torch.zeros((), device=device)
        op = dist.ReduceOp.SUM if dist.is_available() else None
    total = local.reshape(1).clone()
    if model_parallel_group is not None:
        dist.all_reduce(total, op=op, group=model_parallel_group)
    value = total.item()
    return value if norm_type == math.inf else value ** (1.0 / norm_type)


def clip_grad_norm(params: Iterable[torch.nn.Parameter], max_norm: float,
                   model_parallel_group=None, norm_type: float = 2.0) -> float:
    """Scale gradients in place so the total norm is at most ``max_norm``.

    Args:
        params: parameters (all of them on this rank, including shared copies, which
            are scaled but not counted twice).
        max_norm: the clipping threshold; ``<= 0`` only measures.
        model_parallel_group: see ``get_grad_norm``.

    Returns:
        The total norm before clipping.
    """
    params = [p for p in params if grad_buffer(p) is not None]
    total = get_grad_norm(params, norm_type, model_parallel_group)
    if max_norm > 0 and math.isfinite(total):
        coeff = max_norm / (total + 1e-6)
        if coeff < 1.0:
            torch._foreach_mul_([grad_buffer(p) for p in params], coeff)
    return total


def count_zeros(params: Iterable[torch.nn.Parameter], model_parallel_group=None) -> int:
    """Number of exactly-zero gradient entries (counted once across model-parallel ranks)."""
    total = torch.zeros(1, dtype=torch.float64)
    for p in params:
        g = grad_buffer(p)
        if g is not None and counts_toward_grad_norm(p):
            total += (g == 0).sum().to(total.device, torch.float64)
    if model_parallel_group is None and dist.is_available() and dist.is_initialized():
        model_parallel_group = parallel_state.get_model_parallel_group()
    if model_parallel_group is not None:
        dist.all_reduce(total, group=model_parallel_group)
    return int(total.item())
