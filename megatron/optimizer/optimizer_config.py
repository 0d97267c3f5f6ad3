"""Optimizer settings, built once from the flags by ``megatron.arguments``."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class OptimizerConfig:
    """What ``get_megatron_optimizer`` needs; no global args are read below this."""
    optimizer: str = "adam"            # "adam" (AdamW) | "sgd"
    lr: float = 1e-4                   # initial value; the LR scheduler overwrites it
    min_lr: float = 0.0
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    sgd_momentum: float = 0.9
    clip_grad: float = 1.0             # 0 disables clipping (the norm is still reported)
    fp16: bool = False
    bf16: bool = False
    loss_scale: float | None = None    # static scale; None = dynamic under fp16
    initial_loss_scale: float = 2.0 ** 32
    min_loss_scale: float = 1.0
    loss_scale_window: int = 1000
    hysteresis: int = 2
    use_distributed_optimizer: bool = False
    use_torch_fsdp2: bool = False      # the model is FSDP2-sharded (core.distributed.fsdp)
    # main_grad buffer in fp32 (always under bf16); fp16 without it keeps fp16 gradients
    accumulate_allreduce_grads_in_fp32: bool = False

    def grad_dtype(self, param_dtype: torch.dtype) -> torch.dtype:
        """The dtype gradients of ``param_dtype`` parameters accumulate and reduce in."""
        if param_dtype == torch.float32 or self.bf16 or self.accumulate_allreduce_grads_in_fp32:
            return torch.float32
        return param_dtype
