"""Which gradient a parameter holds, and whether it counts toward the gradient norm: the
one home of both rules, read by the DP reduction, the optimizers and clipping."""
from __future__ import annotations

import torch
from torch import nn

from megatron.core import parallel_state

# Parameter attributes that say how a parameter is laid out across ranks (read by the
# gradient reductions, the norm and the checkpoint code); copies of a parameter carry them.
LAYOUT_ATTRS = ("tensor_model_parallel", "partition_dim", "partition_stride",
                "shared_embedding", "shared", "sequence_parallel", "expert_parallel")


def grad_buffer(param: nn.Parameter, allocate: bool = False) -> torch.Tensor | None:
    """The gradient the optimizer reads: ``.main_grad`` (a view of the parameter's
    gradient buffer, see ``grad_buffer.GradBuffer``), else ``.grad``; of an FSDP2-sharded
    parameter (``.grad`` a DTensor) this rank's shard, sharing its storage.

    Args:
        param: the parameter.
        allocate: give a parameter without any gradient a zero ``.grad`` (every DP rank
            must reduce the same list of tensors, so one that took no part in this
            rank's backward contributes zeros rather than being skipped).
    """
    if getattr(param, "main_grad", None) is not None:
        return param.main_grad
    if param.grad is None and allocate:
        param.grad = torch.zeros_like(param)
    grad = param.grad
    return grad.to_local() if grad is not None and hasattr(grad, "to_local") else grad


def counts_toward_grad_norm(param: nn.Parameter) -> bool:
    """False for copies another rank already counts in the global gradient norm: a
    parameter replicated across tensor-parallel ranks counts on TP rank 0 only, and the
    last stage's copy of the tied word embedding (``shared_embedding``) counts on the first
    physical pipeline stage only (whatever virtual chunk is current)."""
    tensor_parallel = getattr(param, "tensor_model_parallel", False)
    if not tensor_parallel and parallel_state.get_tensor_model_parallel_rank() > 0:
        return False  # replicated across TP (layer norms, row-parallel biases)
    shared = getattr(param, "shared_embedding", False) or getattr(param, "shared", False)
    if shared and parallel_state.get_pipeline_model_parallel_world_size() > 1 and \
            not parallel_state.is_pipeline_first_stage(ignore_virtual=True):
        return False
    return True
