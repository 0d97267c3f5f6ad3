"""Optimizer construction: AdamW / SGD, no weight decay on biases and norms, fp16 loss
scaling, fp32 main parameters under bf16/fp16, and the distributed-optimizer hook."""
from __future__ import annotations

import torch
import torch.distributed as dist

from megatron.core import parallel_state
from megatron.core.distributed.distributed_optimizer import DistributedOptimizer
from megatron.core.distributed.grad_buffer import build_grad_buffers
from megatron.optimizer.fsdp_optimizer import FSDPOptimizer
from megatron.optimizer.grad_scaler import ConstantGradScaler, DynamicGradScaler
from megatron.optimizer.optimizer import (FP32Optimizer, MegatronOptimizer,
                                         MixedPrecisionOptimizer, ShardedOptimizer)
from megatron.optimizer.optimizer_config import OptimizerConfig

__all__ = ["OptimizerConfig", "MegatronOptimizer", "FP32Optimizer", "MixedPrecisionOptimizer", "ShardedOptimizer",
           "FSDPOptimizer", "ConstantGradScaler", "DynamicGradScaler", "get_param_groups",
           "get_megatron_optimizer"]


def get_param_groups(model_chunks: list[torch.nn.Module]) -> list[dict]:
    """Split trainable parameters into a decayed group and a no-decay group.

    Biases and 1-D parameters (layer-norm weights) get ``wd_mult = 0``; the LR
    scheduler multiplies the weight decay by ``wd_mult``.
    """
    decay, no_decay = [], []
    for chunk in model_chunks:
        for name, param in chunk.named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if name.endswith(".bias") or param.ndim == 1 else decay).append(param)
    groups = [{"params": decay, "wd_mult": 1.0, "lr_mult": 1.0},
              {"params": no_decay, "wd_mult": 0.0, "lr_mult": 1.0}]
    return [g for g in groups if g["params"]]


def _torch_optimizer(groups: list[dict], config: OptimizerConfig) -> torch.optim.Optimizer:
    """AdamW (apex FusedAdam on CUDA when importable and the parameters are not FSDP2
    shards, else torch fused / foreach) or SGD."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.sgd_momentum,
                               weight_decay=config.weight_decay)
    if config.optimizer != "adam":
        raise ValueError(f"--optimizer must be adam or sgd, got {config.optimizer!r}")
    kwargs = dict(lr=config.lr, betas=(config.adam_beta1, config.adam_beta2),
                  eps=config.adam_eps, weight_decay=config.weight_decay)
    on_cuda = any(p.is_cuda for g in groups for p in g["params"])
    if on_cuda and not config.use_torch_fsdp2:   # apex's kernels take no DTensor shards
        try:
            from apex.optimizers import FusedAdam   # optional; never required
            return FusedAdam(groups, adam_w_mode=True, **kwargs)
        except ImportError:
            pass
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, foreach=True, **kwargs)


def _grad_scaler(config: OptimizerConfig) -> ConstantGradScaler | None:
    if not config.fp16:
        return None   # bf16 has fp32's exponent range: no loss scaling
    if config.loss_scale is not None:
        return ConstantGradScaler(config.loss_scale)
    return DynamicGradScaler(initial_scale=config.initial_loss_scale,
                             min_scale=config.min_loss_scale,
                             growth_interval=config.loss_scale_window,
                             hysteresis=config.hysteresis)


def get_megatron_optimizer(model_chunks: list[torch.nn.Module],
                           config: OptimizerConfig) -> MegatronOptimizer:
    """Build the optimizer for this rank's model chunks.

    Every trainable parameter gets an ``main_grad`` in a contiguous gradient buffer
    (``megatron.core.distributed.grad_buffer``; fp32 under bf16 or
    ``accumulate_allreduce_grads_in_fp32``) that backward accumulates into and
    ``finalize_model_grads`` reduces. ``config.use_distributed_optimizer`` selects
    ``megatron.core.distributed.distributed_optimizer.DistributedOptimizer`` (ZeRO-1: the
    buffers are reduce-scattered and the fp32 masters and Adam state sharded over DP);
    ``config.use_torch_fsdp2`` an ``FSDPOptimizer`` stepping on FSDP2's fp32 shards.
    """
    groups = get_param_groups(model_chunks)
    model_params = [p for g in groups for p in g["params"]]
    if config.use_torch_fsdp2:
        if config.fp16:
            raise ValueError("FSDP2 here has no fp16 loss scaling: use --bf16")
        shard_group = parallel_state.get_data_parallel_group() if dist.is_initialized() else None
        return FSDPOptimizer(_torch_optimizer(groups, config), config.clip_grad, model_params,
                             shard_group, mixed_precision=config.bf16)
    if config.use_distributed_optimizer:
        inner = DistributedOptimizer(groups, lambda g: _torch_optimizer(g, config),
                                     clip_grad=config.clip_grad, grad_scaler=_grad_scaler(config),
                                     grad_dtype=config.grad_dtype)
        return ShardedOptimizer(inner, model_params)
    buffers = build_grad_buffers(groups, config.grad_dtype)
    if not (config.fp16 or config.bf16):
        return FP32Optimizer(_torch_optimizer(groups, config), config.clip_grad, model_params,
                             buffers)
    main_groups, main_params = [], []
    for g in groups:
        mains = MixedPrecisionOptimizer.make_main_params(g["params"])
        main_groups.append({**g, "params": mains})
        main_params.extend(mains)
    return MixedPrecisionOptimizer(_torch_optimizer(main_groups, config), config.clip_grad,
                                   model_params, buffers, main_params, _grad_scaler(config))
