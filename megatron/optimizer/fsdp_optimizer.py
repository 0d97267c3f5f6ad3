"""The optimizer of an FSDP2-sharded model (``--use-torch-fsdp2`` / ``--zero-stage 2|3``).

FSDP2 keeps each parameter as this rank's fp32 shard (a DTensor) and leaves this rank's
shard of the reduced gradient in ``.grad``; the torch optimizer steps on those shards
directly, so its state is sharded too and there is no separate main-parameter copy. The
gradient norm sums the shards' parts over the data-parallel group (``clip_grads``), so
clipping sees the norm one process would.

Checkpoints keep the format of the non-sharded optimizers: :meth:`FSDPOptimizer.state_dict`
gathers every state tensor whole (collective over DP) into ``FP32Optimizer``'s layout, or
under ``--bf16`` ``MixedPrecisionOptimizer``'s (with ``fp32_main_params``), so a sharded
run and a plain data-parallel run of the same tensor-parallel size load each other's
checkpoints, and a resume is bit-exact.
"""
from __future__ import annotations

import torch

from megatron.core.timers import NO_TIMERS, Timers
from megatron.core.distributed.fsdp import full_tensor, local_part, shard_like
from megatron.optimizer.clip_grads import clip_grad_norm
from megatron.optimizer.optimizer import MegatronOptimizer, _model_parallel_group


class FSDPOptimizer(MegatronOptimizer):
    """A torch optimizer built on FSDP2's sharded parameters.

    Args:
        optimizer: the torch optimizer over ``model_params`` (the sharded parameters).
        clip_grad: clip the global gradient norm to this value; 0 only measures it.
        model_params: the sharded trainable parameters, in param-group order.
        shard_group: the data-parallel group the shards are split over.
        mixed_precision: the model computes in bf16 (the checkpoint then stores the fp32
            parameters as ``fp32_main_params``, as the non-sharded bf16 optimizer does).
    """
    sharded_state = False   # state_dict() gathers: one optimizer state per (TP, PP) rank

    def __init__(self, optimizer: torch.optim.Optimizer, clip_grad: float,
                 model_params: list[torch.nn.Parameter], shard_group,
                 mixed_precision: bool) -> None:
        super().__init__(optimizer, clip_grad, model_params)
        self.shard_group = shard_group
        self.mixed_precision = mixed_precision

    def step(self, timers: Timers = NO_TIMERS) -> tuple[bool, float, int | None]:
        with timers.phase("optimizer-clip-main-grad"):
            grad_norm = clip_grad_norm(self.model_params, self.clip_grad,
                                       _model_parallel_group(), shard_group=self.shard_group)
        if grad_norm != grad_norm or grad_norm in (float("inf"), float("-inf")):
            return False, grad_norm, None
        with timers.phase("optimizer-inner-step"):
            self.optimizer.step()
        return True, grad_norm, None

    def _params(self) -> list[torch.nn.Parameter]:
        """The parameters in the torch optimizer's state-dict numbering."""
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def state_dict(self) -> dict:
        """Every state tensor whole, on the CPU (collective over the data-parallel group)."""
        saved = self.optimizer.state_dict()
        state = {i: {k: full_tensor(v).cpu() if torch.is_tensor(v) else v
                     for k, v in entry.items()} for i, entry in saved["state"].items()}
        out = {"optimizer": {**saved, "state": state}}
        if self.mixed_precision:
            out["grad_scaler"] = None
            out["fp32_main_params"] = [full_tensor(p).cpu() for p in self.model_params]
        return out

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Load whole tensors (``state_dict()``'s, or a non-sharded optimizer's of the same
        tensor-parallel layout); this rank keeps its shards."""
        params = self._params()
        saved = state["optimizer"]
        loaded = {}
        for i, entry in saved["state"].items():
            param = params[int(i)]
            loaded[i] = {k: shard_like(v, param) if torch.is_tensor(v) and v.shape == param.shape
                         else v for k, v in entry.items()}
        self.optimizer.load_state_dict({**saved, "state": loaded})
        mains = state.get("fp32_main_params")
        if self.mixed_precision and mains is None:
            raise ValueError("the checkpoint's optimizer holds no fp32_main_params (saved "
                             "without --bf16?); load it with --no-load-optim")
        if mains is not None and self.mixed_precision:
            if len(mains) != len(self.model_params):
                raise ValueError(f"checkpoint has {len(mains)} fp32 main params, model has "
                                 f"{len(self.model_params)}")
            for param, value in zip(self.model_params, mains):
                local_part(param).copy_(local_part(shard_like(value.float(), param)))
