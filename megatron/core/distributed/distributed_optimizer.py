"""ZeRO-1 distributed optimizer (``--use-distributed-optimizer``).

Every data-parallel rank keeps the whole model, but the optimizer state (fp32 master
weights, Adam moments) only for its 1/DP shard of each gradient buffer
(``grad_buffer.GradBuffer``: one contiguous buffer per parameter dtype, dense parameters
over the data-parallel group, MoE experts over the expert-data-parallel group)::

    buffer:  | group 0 params ... | group 1 params ... | pad |
    rank r owns [r * n, (r + 1) * n),   n = padded_numel / group size

Per rank the memory is what ZeRO-1 promises: the model's parameters (in the parameter
buffer), one gradient buffer (fp32 under bf16), and for the shard only the fp32 masters
(none for fp32 parameters: the master *is* the parameter's slice) and Adam's two moments.
One step creates no full-size temporary:

1. each buffer is reduce-scattered in place (divided by the DP size first): rank r's
   slice of it then holds the mean gradient of its shard;
2. the gradient norm is summed over the shards, each element counted once over the
   world (tensor-parallel duplicates and the last stage's tied embedding are left out by
   ranges, not by a mask), and the shard gradients are clipped in place;
3. the inner optimizer (AdamW by default) steps the masters, whose ``.grad`` are views of
   the shard gradients;
4. half-precision parameters take their masters' values (fp32 ones already have them)
   and each parameter buffer is all-gathered in place into the model's weights.

A param group meets a rank's shard of one buffer in one contiguous slice, so the inner
optimizer gets one master per (buffer, group) and each group keeps its hyper-parameters
(``lr``, ``wd_mult`` ...) in ``param_groups``, where the LR scheduler sets them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from megatron.core.devices import collective_device
from megatron.core.distributed.grad_buffer import GradBuffer, build_grad_buffers
from megatron.core.distributed.grads import counts_toward_grad_norm
from megatron.core.state_slots import Segment, StateSlot
from megatron.core.timers import NO_TIMERS, Timers


@dataclass
class ShardPiece:
    """One param group's part of this rank's shard of one buffer: ``[start, end)``."""

    buffer: GradBuffer
    group_index: int
    start: int
    end: int
    master: nn.Parameter
    counted: list[tuple[int, int]] = field(default_factory=list)  # in master coordinates

    @property
    def grad(self) -> torch.Tensor:
        """The shard's gradient: a view of the buffer ``[end - start]``."""
        return self.buffer.grad_data[self.start:self.end]

    @property
    def param(self) -> torch.Tensor:
        """The model's weights of the piece: a view of the parameter buffer."""
        return self.buffer.param_data[self.start:self.end]

    def counted_views(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """The parts of ``tensor`` (laid out like the master) that count toward norms."""
        return [tensor[a:b] for a, b in self.counted]


def _group_runs(buffer: GradBuffer, group_of: dict[int, int]) -> list[tuple[int, int, int]]:
    """``(group index, start, end)`` of each param group's contiguous run in ``buffer``."""
    runs: list[list[int]] = []
    for p, (start, end) in zip(buffer.params, buffer.ranges):
        g = group_of[id(p)]
        if runs and runs[-1][0] == g and runs[-1][2] == start:
            runs[-1][2] = end
        else:
            runs.append([g, start, end])
    return [tuple(r) for r in runs]


def _counted_ranges(buffer: GradBuffer, start: int, end: int) -> list[tuple[int, int]]:
    """Ranges of ``[start, end)`` (relative to ``start``) whose parameters count toward
    the gradient norm, adjacent ones merged."""
    out: list[list[int]] = []
    for p, (a, b) in zip(buffer.params, buffer.ranges):
        a, b = max(a, start), min(b, end)
        if a >= b or not counts_toward_grad_norm(p):
            continue
        if out and out[-1][1] == a - start:
            out[-1][1] = b - start
        else:
            out.append([a - start, b - start])
    return [tuple(r) for r in out]


class DistributedOptimizer:
    """Shards the optimizer state of ``param_groups`` over the data-parallel ranks.

    Same interface as ``megatron.optimizer.MegatronOptimizer``: ``step() -> (ok, grad_norm,
    num_zeros)``, ``zero_grad()``, ``param_groups``, ``scale_loss`` / ``get_loss_scale``
    (fp16 loss scaling), ``state_dict()`` / ``load_state_dict()``,
    ``reload_model_params()``.

    Args:
        param_groups: torch-style groups ``[{"params": [...], "wd_mult": ..., ...}]``.
        make_optimizer: builds the inner optimizer from groups of fp32 shard tensors,
            e.g. ``lambda groups: torch.optim.AdamW(groups, lr=...)``.
        clip_grad: clip the global gradient L2 norm to this value; 0 only measures it.
        grad_scaler: an fp16 loss scaler (``scale``, ``inv_scale``, ``update(found_inf)``,
            ``state_dict``), or None.
        grad_dtype: maps a parameter dtype to its gradient buffer's dtype (default fp32).
    """

    # checkpointing saves state_dict() once per DP rank (distrib_optim_dpXXX.pt).
    sharded_state = True

    def __init__(self, param_groups: list[dict], make_optimizer: Callable[[list[dict]], Any],
                 clip_grad: float = 0.0, grad_scaler: Any = None,
                 grad_dtype: Callable[[torch.dtype], torch.dtype] = lambda _: torch.float32):
        self.clip_grad = clip_grad
        self.grad_scaler = grad_scaler
        if not any(g["params"] for g in param_groups):
            raise ValueError("distributed optimizer: no trainable parameters")
        self.buffers = build_grad_buffers(param_groups, grad_dtype, with_param_buffer=True)
        group_of = {id(p): i for i, g in enumerate(param_groups) for p in g["params"]}
        self.pieces: list[ShardPiece] = []
        inner_groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": []}
                        for g in param_groups]
        for buffer in self.buffers:
            lo, hi = buffer.shard_range
            for g, start, end in _group_runs(buffer, group_of):
                start, end = max(start, lo), min(end, hi)
                if start >= end:
                    continue                 # this rank owns none of this run
                piece = ShardPiece(buffer, g, start, end, self._master(buffer, start, end),
                                   _counted_ranges(buffer, start, end))
                inner_groups[g]["params"].append(piece.master)
                self.pieces.append(piece)
        self.optimizer = make_optimizer(inner_groups)

    @staticmethod
    def _master(buffer: GradBuffer, start: int, end: int) -> nn.Parameter:
        """fp32 weights of a shard piece: the parameter buffer's own slice for fp32
        parameters (no copy), an fp32 copy of it for bf16/fp16 ones."""
        weights = buffer.param_data[start:end]
        return nn.Parameter(weights if weights.dtype == torch.float32 else weights.float())

    @property
    def param_groups(self) -> list[dict]:
        """The inner optimizer's groups (an LR scheduler sets ``lr`` / ``weight_decay`` here)."""
        return self.optimizer.param_groups

    @property
    def dp_rank(self) -> int:
        return self.buffers[0].rank

    def get_loss_scale(self) -> float:
        return 1.0 if self.grad_scaler is None else self.grad_scaler.scale

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """The schedule's ``grad_scale_func``: multiply the loss before backward."""
        return loss if self.grad_scaler is None else loss * self.grad_scaler.scale

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradient buffers (``set_to_none`` is accepted for torch's signature)."""
        del set_to_none
        for buffer in self.buffers:
            buffer.zero()

    def _world_reduce(self, values: list[torch.Tensor], op) -> torch.Tensor:
        """Sum (or max) of ``values`` on this rank, reduced over every rank (fp32 [1])."""
        device = collective_device()
        if not values:
            total = torch.zeros(1, device=device)
        elif op == dist.ReduceOp.MAX:
            total = torch.stack(values).max().reshape(1).to(device)
        else:
            total = torch.stack(values).sum().reshape(1).to(device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total, op=op)   # shards x TP x PP: each element on one rank only
        return total

    def _found_inf(self, grads: list[torch.Tensor]) -> bool:
        """True if any rank's shard gradient holds an inf/nan (all ranks agree)."""
        maxes = [n.float() for n in torch._foreach_norm(grads, math.inf)] if grads else []
        bad = [(~torch.isfinite(m)).float() for m in maxes]
        return bool(self._world_reduce(bad, dist.ReduceOp.MAX).item() > 0)

    def _global_grad_norm(self, grads: list[torch.Tensor]) -> float:
        """L2 norm of the whole model's gradient, each element counted once in the world."""
        views = [v for piece, g in zip(self.pieces, grads) for v in piece.counted_views(g)]
        squares = [n.float() ** 2 for n in torch._foreach_norm(views)] if views else []
        return math.sqrt(self._world_reduce(squares, dist.ReduceOp.SUM).item())

    @torch.no_grad()
    def step(self, timers: Timers = NO_TIMERS) -> tuple[bool, float | None, None]:
        """Reduce-scatter, clip, step the shard, all-gather into the model (``timers``:
        Megatron's ``optimizer-inner-step`` and ``params-all-gather``).

        Returns:
            ``(update_successful, grad_norm, num_zeros_in_grad)``; a non-finite gradient
            norm (or an fp16 overflow) skips the update (``False``) on every rank alike.
        """
        for buffer in self.buffers:
            buffer.reduce_scatter()
        # fp32 shard gradients: views of the buffer (an fp32 copy of an fp16 buffer's shard)
        grads = [p.grad if p.grad.dtype == torch.float32 else p.grad.float()
                 for p in self.pieces]
        if self.grad_scaler is not None:
            if grads:
                torch._foreach_mul_(grads, self.grad_scaler.inv_scale)
            found_inf = self._found_inf(grads)
            self.grad_scaler.update(found_inf)
            if found_inf:
                return False, None, None  # fp16 overflow: skip, as the scaler decided
        grad_norm = self._global_grad_norm(grads)
        if not math.isfinite(grad_norm):
            return False, grad_norm, None
        if self.clip_grad > 0 and grads:
            coeff = self.clip_grad / (grad_norm + 1.0e-6)
            if coeff < 1.0:
                torch._foreach_mul_(grads, coeff)
        for piece, grad in zip(self.pieces, grads):
            piece.master.grad = grad
        with timers.phase("optimizer-inner-step"):
            self.optimizer.step()
        with timers.phase("params-all-gather"):
            self._gather_params()
        return True, grad_norm, None

    def _gather_params(self) -> None:
        """Copy half-precision masters into the parameter buffer, then all-gather it."""
        for piece in self.pieces:
            piece.master.grad = None
            if piece.master.data_ptr() != piece.param.data_ptr():
                piece.param.copy_(piece.master.detach())
        for buffer in self.buffers:
            buffer.all_gather_params()

    @torch.no_grad()
    def reload_model_params(self) -> None:
        """Masters from the model's current weights (after loading a checkpoint without
        optimizer state, e.g. ``--finetune`` or ``--no-load-optim``)."""
        for piece in self.pieces:
            if piece.master.data_ptr() != piece.param.data_ptr():
                piece.master.copy_(piece.param)

    def _layout(self) -> dict:
        return {"dp_rank": [b.rank for b in self.buffers], "dp_size": [b.size for b in self.buffers],
                "padded_numel": [b.padded_numel for b in self.buffers]}

    def state_slots(self) -> list[StateSlot]:
        """One slot per shard piece: the parameters' elements that fall in ``[start, end)``
        of the buffer (the master is the buffer's own slice for fp32 parameters)."""
        slots = []
        for piece in self.pieces:
            segments = []
            for p, (a, b) in zip(piece.buffer.params, piece.buffer.ranges):
                lo, hi = max(a, piece.start), min(b, piece.end)
                if lo < hi:
                    segments.append(Segment(p, lo - piece.start, hi - piece.start, lo - a))
            separate = piece.master.data_ptr() != piece.param.data_ptr()
            slots.append(StateSlot(piece.master, tuple(segments), separate))
        return slots

    def state_dict(self) -> dict:
        """This DP rank's shard of the state (no collective): save one per DP rank."""
        return {"optimizer": self.optimizer.state_dict(),
                "masters": [p.master.detach().clone() for p in self.pieces],
                "grad_scaler": None if self.grad_scaler is None else self.grad_scaler.state_dict(),
                **self._layout()}

    def load_state_dict(self, state: dict) -> None:
        """Load a shard saved by the same DP rank under the same layout."""
        if isinstance(state.get("padded_numel"), int):
            raise ValueError("distributed optimizer checkpoint: written before the gradient "
                             "buffers (one flat layout); load it with --no-load-optim")
        for key, mine in self._layout().items():
            if state.get(key) != mine:
                raise ValueError(f"distributed optimizer checkpoint: {key} is {state.get(key)} "
                                 f"but this run has {mine}; the optimizer state can only be "
                                 "loaded under the same data-parallel size and model")
        self.optimizer.load_state_dict(state["optimizer"])
        if self.grad_scaler is not None and state.get("grad_scaler") is not None:
            self.grad_scaler.load_state_dict(state["grad_scaler"])
        with torch.no_grad():
            for piece, saved in zip(self.pieces, state["masters"]):
                piece.master.copy_(saved)
