"""FSDP2 (``torch.distributed.fsdp.fully_shard``) as the sharded data-parallel mode.

``--use-torch-fsdp2`` (and Megatron-DeepSpeed's ``--zero-stage 2|3``, mapped in
``megatron.fsdp_flags``) shard every parameter, its gradient and its optimizer state over
the data-parallel group; nothing here shards by hand, torch's FSDP2 does:

* **Wrapping.** Each transformer layer is one FSDP unit and the model chunk itself is the
  root (embedding, final norm, output layer and any tied word embedding: its two uses stay
  in one unit, so a tied weight is one parameter with one gradient). The mesh is a 1-D
  ``DeviceMesh`` over parallel_state's data-parallel group: tensor parallelism stays the
  hand-written Column/RowParallelLinear layers, whose plain-tensor shards FSDP shards once
  more over DP (the 2-D dp x tp layout).
* **Precision.** The sharded parameters are fp32 (the main parameters the optimizer steps
  on); ``MixedPrecisionPolicy`` gathers them in bf16 for compute under ``--bf16`` and
  reduce-scatters gradients in fp32. Layer inputs are not cast: the rotary table stays
  fp32, as Megatron keeps it.
* **Gradients.** FSDP reduce-scatters each unit's gradient (mean over DP) in backward; the
  schedule defers that to the last micro-batch of a step (``no_sync``), so gradient
  accumulation is exact and reduces once. A parameter's ``.grad`` is then a DTensor whose
  local part is this rank's shard; ``finalize_model_grads`` skips the DP reduction for it
  and still sums sequence-parallel norm gradients over TP (on the shards: every TP rank
  shards them alike).
* **Layout attributes** (``tensor_model_parallel``, ``sequence_parallel``, ...) that the
  norm, clipping and checkpoint code read are copied onto FSDP's new sharded parameters.
* **State.** :func:`full_model_state` / :func:`load_full_model_state` turn the sharded
  weights into whole (per TP rank) tensors and back, so the checkpoint format is the
  non-sharded one (``megatron.checkpointing``); every DP rank takes part (all-gathers).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterable

import torch
from torch import nn

from megatron.core import parallel_state
from megatron.core.devices import collective_device
from megatron.core.distributed.grads import LAYOUT_ATTRS


@dataclass(frozen=True)
class FSDPConfig:
    """How the model chunks are sharded.

    Attributes:
        reshard_after_forward: free each layer's gathered weights after its forward and
            gather again for backward (ZeRO-3, ``--zero-stage 3`` / FSDP2's default);
            False keeps them gathered until backward (ZeRO-2's memory, less traffic).
        param_dtype: the compute dtype of the gathered weights (None: the fp32 masters).
    """
    reshard_after_forward: bool = True
    param_dtype: torch.dtype | None = None


def is_fully_sharded(module: nn.Module) -> bool:
    """True when ``fully_shard`` was applied to ``module`` (an FSDP2 root or unit)."""
    from torch.distributed.fsdp import FSDPModule
    return isinstance(module, FSDPModule)


def is_sharded_param(param: torch.Tensor) -> bool:
    """True for an FSDP2-sharded parameter (a DTensor): FSDP reduces its gradient."""
    from torch.distributed.tensor import DTensor
    return isinstance(param, DTensor)


def data_parallel_mesh():
    """A 1-D ``DeviceMesh`` over parallel_state's data-parallel group (this rank's).

    Raises:
        RuntimeError: torch.distributed is not initialised (FSDP2 needs a process group,
            also for one rank).
    """
    from torch.distributed.device_mesh import DeviceMesh
    if not torch.distributed.is_initialized():
        raise RuntimeError("FSDP2 (--use-torch-fsdp2 / --zero-stage 2|3) needs a process "
                           "group: launch with torchrun, also for one process")
    group = parallel_state.get_data_parallel_group()
    return DeviceMesh.from_group(group, collective_device(group).type)


def fully_shard_chunk(chunk: nn.Module, layers: Iterable[nn.Module],
                      config: FSDPConfig) -> nn.Module:
    """Shard ``chunk`` in place: each of ``layers`` one FSDP unit, ``chunk`` the root.

    Args:
        chunk: the model chunk, on its device, in any float dtype (made fp32 here: the
            sharded parameters are the optimizer's fp32 main parameters).
        layers: the transformer layers (submodules of ``chunk``).
        config: resharding and compute precision.

    Returns:
        ``chunk`` (now also an ``FSDPModule``).
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    chunk.float()
    attrs = {name: {a: getattr(p, a) for a in LAYOUT_ATTRS if hasattr(p, a)}
             for name, p in chunk.named_parameters()}
    mesh = data_parallel_mesh()
    policy = MixedPrecisionPolicy(param_dtype=config.param_dtype, reduce_dtype=torch.float32,
                                  cast_forward_inputs=False)
    for layer in layers:
        fully_shard(layer, mesh=mesh, reshard_after_forward=config.reshard_after_forward,
                    mp_policy=policy)
    # the root's weights are used last in forward and first in backward: keep them
    fully_shard(chunk, mesh=mesh, reshard_after_forward=False, mp_policy=policy)
    for name, param in chunk.named_parameters():
        for attr, value in attrs[name].items():
            setattr(param, attr, value)
    chunk.fsdp_config = config   # the checkpoint stores weights in its compute dtype
    return chunk


def no_sync(chunks: list[nn.Module]) -> Callable[[], ContextManager] | None:
    """The schedule's ``no_sync_func`` for ``chunks``: a context in which backward
    accumulates unsharded gradients without reduce-scattering (every micro-batch but a
    step's last). None when no chunk is sharded."""
    roots = [c for c in chunks if is_fully_sharded(c)]
    if not roots:
        return None

    @contextlib.contextmanager
    def context():
        for root in roots:
            root.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            for root in roots:
                root.set_requires_gradient_sync(True)
    return context


def local_part(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (the tensor itself otherwise); shares its storage."""
    return tensor.to_local() if is_sharded_param(tensor) else tensor


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a DTensor (an all-gather over its mesh; collective), else
    ``tensor``; detached."""
    return (tensor.full_tensor() if is_sharded_param(tensor) else tensor).detach()


def shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``full`` laid out as ``like`` (a DTensor: this rank's shard of ``full``, taken
    locally without communication; a plain tensor: ``full`` itself)."""
    if not is_sharded_param(like):
        return full
    from torch.distributed.tensor import distribute_tensor
    return distribute_tensor(full.to(like.device, like.dtype), like.device_mesh, like.placements,
                             src_data_rank=None)


def full_model_state(chunk: nn.Module) -> dict:
    """The sharded chunk's state dict as a non-sharded run saves it: every tensor whole
    (gathered over DP, collective), on the CPU, floating-point weights in the compute dtype
    (bf16 under ``--bf16``: the fp32 values are the optimizer's ``fp32_main_params``)."""
    dtype = getattr(chunk, "fsdp_config", FSDPConfig()).param_dtype
    out = {}
    for key, value in chunk.state_dict().items():
        value = full_tensor(value).cpu()
        out[key] = value.to(dtype) if dtype is not None and value.is_floating_point() else value
    return out


@torch.no_grad()
def load_full_model_state(chunk: nn.Module, state: dict) -> None:
    """Load whole tensors (as :func:`full_model_state` gives them) into a sharded chunk;
    each rank keeps its shard. Keys must match exactly."""
    own = chunk.state_dict()
    missing, unexpected = own.keys() - state.keys(), state.keys() - own.keys()
    if missing or unexpected:
        raise KeyError(f"model state does not match the model: missing {sorted(missing)}, "
                       f"unexpected {sorted(unexpected)}")
    for key, target in own.items():
        local_part(target).copy_(local_part(shard_like(state[key], target)))
