"""Norms of Adam's states for ``--log-optimizer-states-to-tensorboard`` (Megatron-DeepSpeed's
``optimizer/{variance,variance_sqrt,momentum,weight}_{l2,l1,abs_max}`` scalars).

Every element is counted once over the whole model: copies that another rank already counts
(``counts_toward_grad_norm``: TP-replicated parameters off TP rank 0, the last stage's tied
embedding) are masked out, the model-parallel ranks are summed (max for ``abs_max``), and
under ``--use-distributed-optimizer`` (ZeRO-1) and FSDP2 the data-parallel shards too; a
plain data-parallel rank holds the whole (replicated) state, so it is not summed over DP.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from megatron.core import parallel_state
from megatron.core.devices import collective_device
from megatron.core.distributed.fsdp import local_part
from megatron.core.distributed.grads import counts_toward_grad_norm

_NAMES = ("variance", "variance_sqrt", "momentum", "weight")


def _entries(optimizer) -> tuple[list[tuple[torch.Tensor, list[tuple[int, int]]]], bool]:
    """``[(weight, counted ranges of its flattened local elements)]`` of this rank's Adam
    parameters, and whether the state is sharded over data-parallel ranks."""
    inner = optimizer.optimizer
    if hasattr(inner, "pieces"):          # the ZeRO-1 DistributedOptimizer
        return [(piece.master, piece.counted) for piece in inner.pieces], True
    params = getattr(optimizer, "main_params", None) or optimizer.model_params
    sharded = getattr(optimizer, "shard_group", None) is not None   # FSDP2: DTensor shards
    return [(p, [(0, local_part(p).numel())] if counts_toward_grad_norm(p) else [])
            for p in params], sharded


def _state_of(optimizer, param: torch.Tensor) -> dict:
    inner = optimizer.optimizer
    torch_opt = inner.optimizer if hasattr(inner, "pieces") else inner
    return torch_opt.state.get(param, {})


def adam_state_norms(optimizer) -> dict[str, float]:
    """``{"optimizer/variance_l2": ..., ...}`` over the whole model (a collective over the
    model-parallel group, and the data-parallel group under ZeRO-1); empty before the first
    step or for an optimizer without Adam states.
    """
    entries, sharded = _entries(optimizer)
    device = collective_device(parallel_state.get_model_parallel_group())
    sums = torch.zeros(8, dtype=torch.float64, device=device)   # l2^2, then l1, of the four
    maxes = torch.zeros(4, dtype=torch.float64, device=device)
    found = False
    for param, counted in entries:
        state = _state_of(optimizer, param)
        if "exp_avg" not in state or param.numel() == 0:
            continue
        found = True
        v = local_part(state["exp_avg_sq"]).detach().reshape(-1)
        m = local_part(state["exp_avg"]).detach().reshape(-1)
        w = local_part(param).detach().reshape(-1)
        for a, b in counted:                   # views: no full-size temporary per tensor
            for i, t in enumerate((v[a:b], v[a:b].sqrt(), m[a:b], w[a:b])):
                t = t.abs().double()
                sums[i] += (t * t).sum().to(device)
                sums[4 + i] += t.sum().to(device)
                maxes[i] = torch.maximum(maxes[i], t.max().to(device))
    if dist.is_available() and dist.is_initialized():
        flag = torch.tensor([float(found)], dtype=torch.float64, device=device)
        groups = [parallel_state.get_model_parallel_group()]
        if sharded:
            groups.append(parallel_state.get_data_parallel_group())
        for group in groups:
            for t, op in ((sums, dist.ReduceOp.SUM), (maxes, dist.ReduceOp.MAX),
                          (flag, dist.ReduceOp.MAX)):
                dist.all_reduce(t, op=op, group=group)
        found = bool(flag.item())
    if not found:
        return {}
    sums, maxes = sums.tolist(), maxes.tolist()    # one host copy each
    out = {}
    for i, name in enumerate(_NAMES):
        out[f"optimizer/{name}_l2"] = sums[i] ** 0.5
        out[f"optimizer/{name}_l1"] = sums[4 + i]
        out[f"optimizer/{name}_abs_max"] = maxes[i]
    return out
