"""Optimizer wrappers: fp32, and mixed precision (fp16/bf16 model, fp32 main params).

Gradients arrive in each parameter's ``main_grad``, a view of a contiguous gradient buffer
(``megatron.core.distributed.grad_buffer``) that backward accumulates into and
``finalize_model_grads`` reduces; the wrappers hand it to the torch optimizer as ``.grad``
without copying when it is already fp32.

``step(timers)`` returns ``(update_successful, grad_norm, num_zeros_in_grad)`` and times
its parts under Megatron's level-1 names (``optimizer-copy-to-main-grad``,
``optimizer-unscale-and-check-inf``, ``optimizer-clip-main-grad``,
``optimizer-inner-step``, ``optimizer-copy-main-to-model-params``). A step is not
applied when a gradient is not finite: under fp16 that is the loss scaler's overflow
(skipped and reported), under fp32/bf16 the caller stops training.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist

from megatron.core import parallel_state
from megatron.core.devices import collective_device
from megatron.core.timers import NO_TIMERS, Timers
from megatron.core.distributed.grad_buffer import GradBuffer
from megatron.core.distributed.grads import LAYOUT_ATTRS, grad_buffer
from megatron.core.state_slots import StateSlot, whole_param_slots
from megatron.optimizer.clip_grads import clip_grad_norm
from megatron.optimizer.grad_scaler import ConstantGradScaler


def _model_parallel_group():
    if dist.is_available() and dist.is_initialized():
        return parallel_state.get_model_parallel_group()
    return None


class MegatronOptimizer:
    """Base wrapper around a ``torch.optim`` optimizer built on ``main_params``.

    Args:
        optimizer: the torch optimizer.
        clip_grad: clip the global gradient norm to this value; 0 only measures it.
        model_params: the model's trainable parameters.
        buffers: the gradient buffers holding their ``main_grad`` (empty: ``.grad``).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, clip_grad: float,
                 model_params: list[torch.nn.Parameter],
                 buffers: list[GradBuffer] | None = None) -> None:
        self.optimizer = optimizer
        self.clip_grad = clip_grad
        self.model_params = model_params
        self.buffers = list(buffers or [])
        self.grad_scaler: ConstantGradScaler | None = None

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    @property
    def torch_optimizer(self) -> torch.optim.Optimizer:
        """The ``torch.optim`` optimizer that steps :meth:`state_slots` tensors."""
        return self.optimizer

    def get_loss_scale(self) -> float:
        return 1.0 if self.grad_scaler is None else self.grad_scaler.scale

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """The schedule's ``grad_scale_func``: multiply the loss before backward."""
        return loss if self.grad_scaler is None else loss * self.grad_scaler.scale

    def zero_grad(self) -> None:
        for buffer in self.buffers:
            buffer.zero()
        for p in self.model_params:
            p.grad = None

    def reload_model_params(self) -> None:
        """Make the optimizer's own copy of the weights (if any) equal the model's again,
        after the model was loaded without optimizer state."""

    def _clip_and_step(self, params: list[torch.nn.Parameter],
                       timers: Timers = NO_TIMERS) -> tuple[bool, float]:
        with timers.phase("optimizer-clip-main-grad"):
            grad_norm = clip_grad_norm(params, self.clip_grad, _model_parallel_group())
        if not math.isfinite(grad_norm):
            return False, grad_norm
        with timers.phase("optimizer-inner-step"):
            self.optimizer.step()
        return True, grad_norm


class FP32Optimizer(MegatronOptimizer):
    """Model parameters are the fp32 parameters the optimizer updates."""

    def step(self, timers: Timers = NO_TIMERS) -> tuple[bool, float, int | None]:
        for p in self.model_params:
            p.grad = grad_buffer(p)      # main_grad itself: no copy
        ok, grad_norm = self._clip_and_step(self.model_params, timers)
        if self.buffers:
            for p in self.model_params:
                p.grad = None            # the next backward accumulates into main_grad
        return ok, grad_norm, None

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def state_slots(self) -> list[StateSlot]:
        """The inner optimizer steps the model's parameters themselves."""
        return whole_param_slots(self.model_params, self.model_params, separate_master=False)

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


class MixedPrecisionOptimizer(MegatronOptimizer):
    """fp16/bf16 model parameters with fp32 main copies that the optimizer updates.

    ``optimizer`` must already be built on ``main_params`` (same group structure as the
    model parameters, see ``get_megatron_optimizer``).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, clip_grad: float,
                 model_params: list[torch.nn.Parameter], buffers: list[GradBuffer],
                 main_params: list[torch.nn.Parameter],
                 grad_scaler: ConstantGradScaler | None) -> None:
        super().__init__(optimizer, clip_grad, model_params, buffers)
        self.main_params = main_params
        self.grad_scaler = grad_scaler

    @staticmethod
    def make_main_params(model_params: list[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
        """fp32 copies carrying the model parameters' layout attributes."""
        mains = []
        for p in model_params:
            main = torch.nn.Parameter(p.detach().clone().float())
            for attr in LAYOUT_ATTRS:
                if hasattr(p, attr):
                    setattr(main, attr, getattr(p, attr))
            mains.append(main)
        return mains

    def _copy_grads_to_main(self) -> None:
        """fp32 gradients of the main params: the fp32 main_grad itself (a view of the
        buffer, no copy), or an fp32 copy of an fp16 one."""
        for model, main in zip(self.model_params, self.main_params):
            grad = grad_buffer(model)
            main.grad = None if grad is None else grad.detach().float()

    @torch.no_grad()
    def reload_model_params(self) -> None:
        torch._foreach_copy_([m.data for m in self.main_params],
                             [p.data for p in self.model_params])

    def _unscale_and_check(self) -> bool:
        """Divide grads by the loss scale; True if any is inf/nan on any MP rank."""
        grads = [m.grad for m in self.main_params if m.grad is not None]
        group = _model_parallel_group()
        if grads:
            torch._foreach_mul_(grads, self.grad_scaler.inv_scale)
            maxes = torch.stack(torch._foreach_norm(grads, math.inf))
            found = (~torch.isfinite(maxes)).any().float().reshape(1)
        else:   # a rank without gradients still takes part
            found = torch.zeros(1)
        if group is not None:
            found = found.to(collective_device(group))
            dist.all_reduce(found, op=dist.ReduceOp.MAX, group=group)
        return bool(found.item() > 0)

    def step(self, timers: Timers = NO_TIMERS) -> tuple[bool, float | None, int | None]:
        with timers.phase("optimizer-copy-to-main-grad"):
            self._copy_grads_to_main()
        if self.grad_scaler is not None:
            with timers.phase("optimizer-unscale-and-check-inf"):
                found_inf = self._unscale_and_check()
            self.grad_scaler.update(found_inf)
            if found_inf:
                return False, None, None
        ok, grad_norm = self._clip_and_step(self.main_params, timers)
        if ok:
            with torch.no_grad(), timers.phase("optimizer-copy-main-to-model-params"):
                torch._foreach_copy_([p.data for p in self.model_params],
                                     [m.data for m in self.main_params])
        return ok, grad_norm, None

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(),
                "grad_scaler": None if self.grad_scaler is None else self.grad_scaler.state_dict(),
                "fp32_main_params": [m.detach().clone() for m in self.main_params]}

    def state_slots(self) -> list[StateSlot]:
        """The inner optimizer steps one fp32 main copy per model parameter."""
        return whole_param_slots(self.model_params, self.main_params, separate_master=True)

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.grad_scaler is not None and state.get("grad_scaler") is not None:
            self.grad_scaler.load_state_dict(state["grad_scaler"])
        saved = state["fp32_main_params"]
        if len(saved) != len(self.main_params):
            raise ValueError(f"checkpoint has {len(saved)} fp32 main params, model has "
                             f"{len(self.main_params)}")
        with torch.no_grad():
            for main, value in zip(self.main_params, saved):
                main.copy_(value)


class ShardedOptimizer(MegatronOptimizer):
    """Wraps the ZeRO-1 ``DistributedOptimizer`` (``--use-distributed-optimizer``).

    Its state is this DP rank's shard, so checkpoints store one optimizer file per DP
    rank (``sharded_state = True`` tells ``megatron.checkpointing`` so).
    """
    sharded_state = True

    def __init__(self, distributed_optimizer, model_params: list[torch.nn.Parameter]) -> None:
        super().__init__(distributed_optimizer, distributed_optimizer.clip_grad, model_params,
                         distributed_optimizer.buffers)
        self.grad_scaler = distributed_optimizer.grad_scaler    # fp16: the shards share one scale

    def zero_grad(self) -> None:
        self.optimizer.zero_grad()

    def reload_model_params(self) -> None:
        self.optimizer.reload_model_params()

    def step(self, timers: Timers = NO_TIMERS) -> tuple[bool, float, int | None]:
        return self.optimizer.step(timers)

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def state_slots(self) -> list[StateSlot]:
        return self.optimizer.state_slots()

    @property
    def torch_optimizer(self) -> torch.optim.Optimizer:
        return self.optimizer.optimizer

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)
