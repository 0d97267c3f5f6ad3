"""ZeRO-1 distributed optimizer (``--use-distributed-optimizer``).

Every data-parallel rank keeps the full model, but the optimizer state (fp32 master
weights, Adam moments) only for a contiguous 1/DP shard of all parameters laid end to end:

    flat layout:  | group 0 params ... | group 1 params ... | pad |
    DP rank r owns elements [r * n, (r + 1) * n),   n = padded_numel / DP

One step:
1. the gradients of all parameters are flattened (fp32) and reduce-scattered over the
   data-parallel group, averaged: rank r receives the mean gradient of its shard only;
2. the gradient norm is computed from the shards (each element counted once over the
   whole world: tensor-parallel duplicates and the last stage's embedding copy are
   masked out) and the shard gradients are clipped;
3. the inner optimizer (AdamW by default) steps the shard;
4. the updated shards are all-gathered and copied back into the model parameters.

Because param groups are laid out one after the other, a rank's shard meets each group in
one contiguous slice, so the inner optimizer gets one tensor per group and keeps the
group's hyper-parameters (``lr``, ``weight_decay``, ``lr_mult`` ...) where an LR scheduler
expects them: in ``param_groups``.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from megatron.core import parallel_state
from megatron.core.distributed.grads import counts_toward_grad_norm, grad_buffer

_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


class DistributedOptimizer:
    """Shards the optimizer state of ``param_groups`` over the data-parallel group.

    Same interface as ``megatron.optimizer.MegatronOptimizer``: ``step() -> (ok, grad_norm,
    num_zeros)``, ``zero_grad()``, ``param_groups``, ``scale_loss`` / ``get_loss_scale``
    (fp16 loss scaling), ``state_dict()`` / ``load_state_dict()``.

    Args:
        param_groups: torch-style groups ``[{"params": [...], "wd_mult": ..., ...}]``.
        make_optimizer: builds the inner optimizer from groups of fp32 shard tensors,
            e.g. ``lambda groups: torch.optim.AdamW(groups, lr=...)``.
        clip_grad: clip the global gradient L2 norm to this value; 0 only measures it.
        grad_scaler: an fp16 loss scaler (``scale``, ``inv_scale``, ``update(found_inf)``,
            ``state_dict``), or None.
        group: the data-parallel group (default: from parallel_state).
    """

    # checkpointing saves state_dict() once per DP rank (distrib_optim_dpXXX.pt).
    sharded_state = True

    def __init__(self, param_groups: list[dict], make_optimizer: Callable[[list[dict]], Any],
                 clip_grad: float = 0.0, grad_scaler: Any = None, group=None):
        self.clip_grad = clip_grad
        self.grad_scaler = grad_scaler
        self.group = group if group is not None else parallel_state.get_data_parallel_group()
        self.dp_size = dist.get_world_size(self.group) if dist.is_initialized() else 1
        self.dp_rank = dist.get_rank(self.group) if dist.is_initialized() else 0
        self.params: list[nn.Parameter] = [p for g in param_groups for p in g["params"]]
        if not self.params:
            raise ValueError("distributed optimizer: no trainable parameters")
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError("distributed optimizer: a parameter appears in two param groups")
        numel = sum(p.numel() for p in self.params)
        self.shard_size = math.ceil(numel / self.dp_size)
        self.padded_numel = self.shard_size * self.dp_size
        start = self.dp_rank * self.shard_size
        self.shard_range = (start, start + self.shard_size)
        for p in self.params:
            # finalize_model_grads leaves the data-parallel reduction to step().
            p.grad_reduced_by_optimizer = True
        self._build_shards(param_groups, make_optimizer)

    @classmethod
    def build(cls, model_chunks: list[nn.Module], param_groups: list[dict], config: Any,
              make_optimizer: Callable, grad_scaler: Any = None) -> "DistributedOptimizer":
        """The hook ``get_megatron_optimizer`` calls under ``--use-distributed-optimizer``.

        Args:
            model_chunks: this rank's model chunks (their parameters are in the groups).
            param_groups: the groups of ``get_param_groups``.
            config: an ``OptimizerConfig`` (reads ``clip_grad``).
            make_optimizer: ``(groups, config) -> torch.optim.Optimizer``.
            grad_scaler: the fp16 loss scaler or None.
        """
        del model_chunks  # the groups already list every trainable parameter
        return cls(param_groups, lambda groups: make_optimizer(groups, config),
                   clip_grad=config.clip_grad, grad_scaler=grad_scaler)

    def _build_shards(self, param_groups: list[dict], make_optimizer: Callable) -> None:
        """One fp32 master tensor per group: the group's part of this rank's shard."""
        lo, hi = self.shard_range
        full = self._flatten([p.detach() for p in self.params])
        mask = self._flatten([torch.full_like(p, float(counts_toward_grad_norm(p)),
                                              dtype=torch.float32)
                              for p in self.params])
        self.norm_mask = mask[lo:hi].clone()
        self.shard_slices: list[tuple[int, int]] = []  # offsets inside this rank's shard
        inner_groups, offset = [], 0
        for g in param_groups:
            g_numel = sum(p.numel() for p in g["params"])
            a, b = max(offset, lo), min(offset + g_numel, hi)
            offset += g_numel
            if a >= b:
                a = b = max(min(offset, hi), lo)  # empty: this rank owns none of the group
            self.shard_slices.append((a - lo, b - lo))
            master = nn.Parameter(full[a:b].clone())
            inner_groups.append({**{k: v for k, v in g.items() if k != "params"},
                                 "params": [master]})
        self.optimizer = make_optimizer(inner_groups)

    def _flatten(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """Concatenate as fp32 in layout order, zero-padded to ``padded_numel``."""
        device = tensors[0].device if tensors else torch.device("cpu")
        flat = torch.zeros(self.padded_numel, dtype=torch.float32, device=device)
        offset = 0
        for t in tensors:
            flat[offset:offset + t.numel()].copy_(t.reshape(-1))
            offset += t.numel()
        return flat

    @property
    def param_groups(self) -> list[dict]:
        """The inner optimizer's groups (an LR scheduler sets ``lr`` / ``weight_decay`` here)."""
        return self.optimizer.param_groups

    def _masters(self) -> list[torch.Tensor]:
        return [g["params"][0] for g in self.optimizer.param_groups]

    def get_loss_scale(self) -> float:
        return 1.0 if self.grad_scaler is None else self.grad_scaler.scale

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """The schedule's ``grad_scale_func``: multiply the loss before backward."""
        return loss if self.grad_scaler is None else loss * self.grad_scaler.scale

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the model's gradients (the shard gradients are rebuilt every step)."""
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()
            if getattr(p, "main_grad", None) is not None:
                p.main_grad.zero_()

    def _model_grads(self) -> list[torch.Tensor]:
        grads = []
        for p in self.params:
            g = grad_buffer(p)
            grads.append(torch.zeros_like(p) if g is None else g)
        return grads

    def reduce_scatter_grads(self) -> torch.Tensor:
        """Average the model's gradients over DP; return this rank's shard ``[shard_size]``."""
        flat = self._flatten(self._model_grads())
        if self.dp_size == 1:
            return flat
        flat.div_(self.dp_size)
        shard = torch.empty(self.shard_size, dtype=flat.dtype, device=flat.device)
        _reduce_scatter(shard, flat, group=self.group)
        return shard

    def _global_grad_norm(self, grad_shard: torch.Tensor) -> float:
        """L2 norm of the whole model's gradient, each element counted once in the world."""
        sq = (grad_shard.float() ** 2 * self.norm_mask).sum().reshape(1)
        if dist.is_initialized():
            dist.all_reduce(sq)  # DP shards x TP x PP: every rank holds a distinct part
        return math.sqrt(sq.item())

    def _found_inf(self, grad_shard: torch.Tensor) -> bool:
        """True if any rank's shard holds an inf/nan (all ranks agree)."""
        found = (~torch.isfinite(grad_shard)).any().float().reshape(1)
        if dist.is_initialized():
            dist.all_reduce(found, op=dist.ReduceOp.MAX)
        return bool(found.item() > 0)

    @torch.no_grad()
    def step(self) -> tuple[bool, float | None, None]:
        """Reduce-scatter, clip, step the shard, all-gather into the model.

        Returns:
            ``(update_successful, grad_norm, num_zeros_in_grad)``; a non-finite gradient
            norm (or an fp16 overflow) skips the update (``False``) on every rank alike.
        """
        grad_shard = self.reduce_scatter_grads()
        if self.grad_scaler is not None:
            grad_shard.mul_(self.grad_scaler.inv_scale)
            found_inf = self._found_inf(grad_shard)
            self.grad_scaler.update(found_inf)
            if found_inf:
                return False, None, None  # fp16 overflow: skip, as the scaler decided
        grad_norm = self._global_grad_norm(grad_shard)
        if not math.isfinite(grad_norm):
            return False, grad_norm, None
        if self.clip_grad > 0:
            coeff = self.clip_grad / (grad_norm + 1.0e-6)
            if coeff < 1.0:
                grad_shard.mul_(coeff)
        self.step_shard(grad_shard)
        return True, grad_norm, None

    def step_shard(self, grad_shard: torch.Tensor) -> None:
        """Step the inner optimizer on a final (reduced, unscaled, clipped) shard gradient
        and all-gather the updated parameters into the model."""
        for master, (a, b) in zip(self._masters(), self.shard_slices):
            master.grad = grad_shard[a:b].to(master.dtype)
        self.optimizer.step()
        self._gather_params()

    def _gather_params(self) -> None:
        """All-gather the updated fp32 shards and copy them into the model parameters."""
        device = self.params[0].device if self.params else torch.device("cpu")
        shard = torch.zeros(self.shard_size, dtype=torch.float32, device=device)
        for master, (a, b) in zip(self._masters(), self.shard_slices):
            shard[a:b] = master.detach().reshape(-1)  # the pad at the end stays zero
        if self.dp_size == 1:
            flat = shard
        else:
            flat = torch.empty(self.padded_numel, dtype=torch.float32, device=shard.device)
            _all_gather(flat, shard, group=self.group)
        offset = 0
        for p in self.params:
            p.data.copy_(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()

    def state_dict(self) -> dict:
        """This DP rank's shard of the state (no collective): save one per DP rank."""
        return {"optimizer": self.optimizer.state_dict(),
                "masters": [m.detach().clone() for m in self._masters()],
                "grad_scaler": None if self.grad_scaler is None else self.grad_scaler.state_dict(),
                "dp_rank": self.dp_rank, "dp_size": self.dp_size,
                "padded_numel": self.padded_numel}

    def load_state_dict(self, state: dict) -> None:
        """Load a shard saved by the same DP rank under the same layout."""
        for key, mine in (("dp_size", self.dp_size), ("dp_rank", self.dp_rank),
                          ("padded_numel", self.padded_numel)):
            if state.get(key) != mine:
                raise ValueError(f"distributed optimizer checkpoint: {key} is {state.get(key)} "
                                 f"but this run has {mine}; the optimizer state can only be "
                                 "loaded under the same data-parallel size and model")
        self.optimizer.load_state_dict(state["optimizer"])
        if self.grad_scaler is not None and state.get("grad_scaler") is not None:
            self.grad_scaler.load_state_dict(state["grad_scaler"])
        with torch.no_grad():
            for master, saved in zip(self._masters(), state["masters"]):
                master.copy_(saved)
