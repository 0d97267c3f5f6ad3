"""Gradient norm over all model-parallel ranks, and clipping by it.

Every parameter is counted exactly once across the tensor- and pipeline-parallel ranks:
a parameter without ``tensor_model_parallel`` is replicated on every TP rank, so only TP
rank 0 counts it; the copy of the word embedding that the last pipeline stage keeps for
the output layer (``shared_embedding``) is counted on the first stage only. Under FSDP2 a
gradient is a DTensor split over the data-parallel group: its local shard's part of the
norm is summed over that group first, so the norm equals one process's.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.distributed as dist

from megatron.core import parallel_state
from megatron.core.devices import collective_device
from megatron.core.distributed.fsdp import is_sharded_param
from megatron.core.distributed.grads import counts_toward_grad_norm, grad_buffer


def _local_norm_term(grads: list[torch.Tensor], norm_type: float,
                     device: torch.device) -> torch.Tensor:
    """This rank's max |g| (inf norm) or sum |g|^p of ``grads``, as an fp32 scalar on
    ``device`` (the collective's)."""
    if not grads:
        return torch.zeros((), device=device)
    if norm_type == math.inf:
        term = torch.stack([g.detach().abs().max().float() for g in grads]).max()
    else:
        norms = torch._foreach_norm([g.detach() for g in grads], norm_type)
        term = (torch.stack([n.float() for n in norms]) ** norm_type).sum()
    return term.to(device)


def _combine(a: torch.Tensor, b: torch.Tensor, norm_type: float) -> torch.Tensor:
    return torch.maximum(a, b) if norm_type == math.inf else a + b


# ---- MoE experts: different on every expert-parallel rank, so their part of the norm
# is also reduced over the expert-parallel group (dense parameters are replicated there).
def _split_expert(params: list) -> tuple[list, list]:
    expert = [p for p in params if getattr(p, "expert_parallel", False)]
    return [p for p in params if not getattr(p, "expert_parallel", False)], expert


def _expert_norm_term(grads: list[torch.Tensor], norm_type: float, op,
                      device: torch.device) -> torch.Tensor:
    term = _local_norm_term(grads, norm_type, device).reshape(1).to(device)
    if parallel_state.get_expert_model_parallel_world_size() > 1:
        dist.all_reduce(term, op=op, group=parallel_state.get_expert_model_parallel_group())
    return term.reshape(())


def get_grad_norm(params: Iterable[torch.nn.Parameter], norm_type: float = 2.0,
                  model_parallel_group=None, shard_group=None) -> float:
    """Total gradient norm of ``params`` over the model-parallel group.

    Args:
        params: parameters whose ``.grad`` (or ``.main_grad``) to measure.
        norm_type: 2.0 or ``inf``.
        model_parallel_group: the TP x PP group; ``None`` uses parallel_state's when
            torch.distributed is initialised, else no reduction.
        shard_group: the group FSDP2-sharded parameters' gradients are split over (the
            data-parallel group); None: no parameter is sharded.

    Returns:
        The norm as a Python float (``nan`` / ``inf`` when a gradient is not finite).
    """
    counted = [p for p in params if grad_buffer(p) is not None and counts_toward_grad_norm(p)]
    if model_parallel_group is None and dist.is_available() and dist.is_initialized():
        model_parallel_group = parallel_state.get_model_parallel_group()
    op = (dist.ReduceOp.MAX if norm_type == math.inf else dist.ReduceOp.SUM) \
        if dist.is_available() else None
    # the collectives' device, also for a rank without gradients (its term is 0)
    device = collective_device(model_parallel_group)
    dense, expert = _split_expert(counted)
    sharded = [p for p in dense if is_sharded_param(p)]
    if sharded and shard_group is None:
        raise ValueError("FSDP2-sharded gradients need the shard_group they are split over")
    total = _local_norm_term([grad_buffer(p) for p in dense if not is_sharded_param(p)],
                             norm_type, device)
    if sharded:
        term = _local_norm_term([grad_buffer(p) for p in sharded], norm_type, device).reshape(1)
        dist.all_reduce(term, op=op, group=shard_group)
        total = _combine(total, term.reshape(()), norm_type)
    if expert:
        total = _combine(total, _expert_norm_term([grad_buffer(p) for p in expert], norm_type, op,
                                                  device), norm_type)
    total = total.reshape(1).to(device)
    if model_parallel_group is not None:
        dist.all_reduce(total, op=op, group=model_parallel_group)
    value = total.item()
    return value if norm_type == math.inf else value ** (1.0 / norm_type)


def clip_grad_norm(params: Iterable[torch.nn.Parameter], max_norm: float,
                   model_parallel_group=None, norm_type: float = 2.0,
                   shard_group=None) -> float:
    """Scale gradients in place so the total norm is at most ``max_norm``.

    Args:
        params: parameters (all of them on this rank, including shared copies, which
            are scaled but not counted twice).
        max_norm: the clipping threshold; ``<= 0`` only measures.
        model_parallel_group, shard_group: see ``get_grad_norm``.

    Returns:
        The total norm before clipping.
    """
    params = [p for p in params if grad_buffer(p) is not None]
    total = get_grad_norm(params, norm_type, model_parallel_group, shard_group)
    if max_norm > 0 and math.isfinite(total):
        coeff = max_norm / (total + 1e-6)
        if coeff < 1.0:
            torch._foreach_mul_([grad_buffer(p) for p in params], coeff)
    return total
