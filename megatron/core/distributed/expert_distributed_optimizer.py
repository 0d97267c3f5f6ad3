"""ZeRO-1 for MoE models with expert parallelism (``--use-distributed-optimizer`` with
``--expert-model-parallel-size > 1``).

Expert parameters differ across the expert-parallel ranks, so they cannot share one flat
data-parallel layout with the dense parameters. Two ``DistributedOptimizer`` shards run
side by side: the dense parameters over the data-parallel group, the expert parameters
(``expert_parallel=True``) over the expert-data-parallel group. One step reduce-scatters
both (the expert shard is also divided by EP: its gradients are averaged over the whole
data-parallel size, like ``finalize_model_grads.allreduce_expert_grads``), takes one fp16
overflow decision and one global gradient norm over both, clips both by it, and steps
both.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.distributed as dist

from megatron.core import parallel_state
from megatron.core.distributed.distributed_optimizer import DistributedOptimizer


def split_expert_groups(param_groups: list[dict]) -> tuple[list[dict], list[dict]]:
    """Each group's dense and expert parameters as two groups with its hyper-parameters."""
    dense, expert = [], []
    for g in param_groups:
        rest = {k: v for k, v in g.items() if k != "params"}
        dense.append({**rest, "params": [p for p in g["params"]
                                         if not getattr(p, "expert_parallel", False)]})
        expert.append({**rest, "params": [p for p in g["params"]
                                          if getattr(p, "expert_parallel", False)]})
    return dense, expert


class ExpertParallelDistributedOptimizer:
    """Same interface as ``DistributedOptimizer`` (``step``, ``zero_grad``,
    ``param_groups``, loss scaling, ``state_dict`` per DP rank)."""

    sharded_state = True

    def __init__(self, param_groups: list[dict], make_optimizer: Callable[[list[dict]], Any],
                 clip_grad: float = 0.0, grad_scaler: Any = None) -> None:
        dense, expert = split_expert_groups(param_groups)
        self.clip_grad, self.grad_scaler = clip_grad, grad_scaler
        self.ep = parallel_state.get_expert_model_parallel_world_size()
        self.dense = DistributedOptimizer(dense, make_optimizer, clip_grad, grad_scaler)
        # a pipeline stage without MoE layers has no expert shard (same on its EP peers)
        self.expert = DistributedOptimizer(
            expert, make_optimizer, clip_grad, grad_scaler,
            group=parallel_state.get_expert_data_parallel_group()) \
            if any(g["params"] for g in expert) else None
        self.parts = tuple(p for p in (self.dense, self.expert) if p is not None)

    @property
    def param_groups(self) -> list[dict]:
        return [g for part in self.parts for g in part.param_groups]

    def get_loss_scale(self) -> float:
        return self.dense.get_loss_scale()

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        return self.dense.scale_loss(loss)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none)

    @torch.no_grad()
    def step(self) -> tuple[bool, float | None, None]:
        shards = [part.reduce_scatter_grads() for part in self.parts]
        if self.expert is not None:
            shards[1].div_(self.ep)
        if self.grad_scaler is not None:
            for shard in shards:
                shard.mul_(self.grad_scaler.inv_scale)
            found = torch.tensor([float(not all(bool(torch.isfinite(s).all()) for s in shards))],
                                 device=shards[0].device)
            dist.all_reduce(found, op=dist.ReduceOp.MAX)
            self.grad_scaler.update(bool(found.item() > 0))
            if found.item() > 0:
                return False, None, None
        sq = sum((s.float() ** 2 * part.norm_mask).sum() for s, part in zip(shards, self.parts))
        sq = sq.reshape(1)
        dist.all_reduce(sq)   # every element of both layouts is on exactly one rank
        grad_norm = math.sqrt(sq.item())
        if not math.isfinite(grad_norm):
            return False, grad_norm, None
        coeff = self.clip_grad / (grad_norm + 1.0e-6) if self.clip_grad > 0 else 1.0
        for shard, part in zip(shards, self.parts):
            if coeff < 1.0:
                shard.mul_(coeff)
            part.step_shard(shard)
        return True, grad_norm, None

    def state_dict(self) -> dict:
        return {"dense": self.dense.state_dict(),
                "expert": None if self.expert is None else self.expert.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"dense", "expert"} or (state["expert"] is None) != (self.expert is None):
            raise ValueError("distributed optimizer checkpoint: expected the dense and expert "
                             "shards of this expert-parallel run, got keys " + str(sorted(state)))
        self.dense.load_state_dict(state["dense"])
        if self.expert is not None:
            self.expert.load_state_dict(state["expert"])
