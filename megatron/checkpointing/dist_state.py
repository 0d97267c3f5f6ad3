"""A run's model and optimizer state as global tensors: the sharded part of the
``torch_dist`` format, the same whatever the layout it was saved under.

Names (keys of the DCP state dict)::

    model.{name}                       a model tensor; transformer layers by their global
                                       number (``...layers.{layer_id}...``)
    optimizer.{name}.{key}             a per-parameter optimizer state (Adam's exp_avg,
                                       exp_avg_sq), laid out like the parameter
    optimizer.{name}.fp32_param        the fp32 main weights under --bf16 / --fp16

Shapes and placement follow ``model_split``'s one rule: a tensor marked
``tensor_model_parallel`` is split along ``partition_dim`` (with ``partition_stride`` > 1
the dimension is seen as ``[stride, size / stride]`` and split along the second), every
other tensor is whole on each rank. The pipeline's tied copy of the word embedding is read
from the first stage's, never written. Optimizer state follows its parameter's placement,
down to the ZeRO-1 optimizer's flat shards (``StateSlot``). A tensor whole on every TP
rank is written by TP rank 0 only (ZeRO-1 shards of it differ between TP ranks, and DCP
refuses overlapping chunks); DCP writes chunks several DP ranks hold once.

What is not a tensor of the parameters' shape (Adam's step, the param groups'
hyper-parameters, the loss scaler) is :func:`optimizer_common`, kept in the rank files.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from megatron.checkpointing.global_tensors import GlobalTensor, add_flat_range
from megatron.checkpointing.model_split import (_LAYER_KEY, TIED_COPY_KEY, WORD_EMBEDDING_KEY,
                                                ParamSpec, has_vocab_rows, param_specs)
from megatron.core import parallel_state

MASTER_KEY = "fp32_param"


@dataclass(frozen=True)
class Placed:
    """One local model tensor in its global tensor.

    Attributes:
        name: the global state-dict name.
        tensor: the local tensor (a parameter or buffer).
        local_shape: ``tensor``'s shape seen as the global tensor's (stride dimension split).
        origin: where it sits in the global tensor.
        global_shape: the global tensor's shape.
        writer: this rank writes it.
    """

    name: str
    tensor: torch.Tensor
    local_shape: tuple[int, ...]
    origin: tuple[int, ...]
    global_shape: tuple[int, ...]
    writer: bool


def grown_rows_ok(fqn: str) -> bool:
    """The padded vocabulary's row count may differ between layouts (a different TP)."""
    return has_vocab_rows(fqn.split(".", 1)[1])


def _global_name(module: nn.Module, name: str) -> str:
    match = _LAYER_KEY.match(name)
    if not match:
        return name
    layer = module.get_submodule(match.group(1) + match.group(2))
    layer_id = getattr(layer, "layer_id", None)
    return name if layer_id is None else f"{match.group(1)}{layer_id}{match.group(3)}"


def _place(shape: tuple[int, ...], spec: ParamSpec, tp: int, rank: int) -> tuple:
    """``(local_shape, origin, global_shape)`` of a local tensor of ``shape``."""
    if not spec.tensor_model_parallel or not shape:
        return shape, (0,) * len(shape), shape
    d, stride = spec.partition_dim % len(shape), spec.partition_stride
    local = shape[:d] + ((stride, shape[d] // stride) if stride > 1 else (shape[d],)) \
        + shape[d + 1:]
    d += stride > 1
    origin = tuple(rank * local[d] if i == d else 0 for i in range(len(local)))
    return local, origin, tuple(n * tp if i == d else n for i, n in enumerate(local))


def placements(model_chunks: list[nn.Module]) -> list[Placed]:
    """Every tensor of this rank's model chunks (unwrapped) in its global tensor."""
    tp = parallel_state.get_tensor_model_parallel_world_size()
    tp_rank = parallel_state.get_tensor_model_parallel_rank()
    pipeline = parallel_state.get_pipeline_model_parallel_world_size() > 1
    out = []
    for module in model_chunks:
        specs = param_specs(module)
        for name, tensor in module.state_dict(keep_vars=True).items():
            if not isinstance(tensor, torch.Tensor):
                raise ValueError(f"model entry {name} is not a tensor ({type(tensor).__name__}); "
                                 "the torch_dist format stores tensors only")
            spec = specs.get(name, ParamSpec())
            tied_copy = pipeline and name == TIED_COPY_KEY
            local, origin, shape = _place(tuple(tensor.shape), spec, tp, tp_rank)
            writer = not tied_copy and (tp_rank == 0 or spec.tensor_model_parallel)
            out.append(Placed(WORD_EMBEDDING_KEY if tied_copy else _global_name(module, name),
                              tensor, local, origin, shape, writer))
    return out


def model_tensors(placed: list[Placed], saving: bool) -> dict[str, GlobalTensor]:
    """``model.*`` entries: views of the live tensors (saving: only those this rank writes;
    loading: every one, filled in place)."""
    out: dict[str, GlobalTensor] = {}
    for p in placed:
        if saving and not p.writer:
            continue
        entry = out.setdefault(f"model.{p.name}", GlobalTensor(p.global_shape))
        entry.add(p.origin, p.tensor.detach().view(p.local_shape))
    return out


def _sharded_keys(state: dict, slot_tensor: torch.Tensor) -> list[str]:
    return sorted(k for k, v in state.items()
                  if isinstance(v, torch.Tensor) and v.shape == slot_tensor.shape)


def optimizer_common(optimizer) -> dict:
    """What the optimizer holds besides per-parameter tensors: the scalar state every
    parameter shares (Adam's ``step``), the param groups' hyper-parameters, the loss
    scaler. Raises ValueError when parameters' scalar states differ."""
    inner = optimizer.torch_optimizer
    scalars: dict = {}
    keys: set[str] = set()
    for slot in optimizer.state_slots():
        state = inner.state.get(slot.tensor, {})
        sharded = _sharded_keys(state, slot.tensor)
        keys.update(sharded)
        for key, value in state.items():
            if key in sharded:
                continue
            value = value.detach().cpu().clone() if isinstance(value, torch.Tensor) else value
            if key in scalars and not _same(scalars[key], value):
                raise ValueError(f"optimizer state {key!r} differs between parameters "
                                 f"({scalars[key]} and {value}); the torch_dist format keeps one")
            scalars[key] = value
    scaler = getattr(optimizer, "grad_scaler", None)
    return {"state_keys": sorted(keys), "scalars": scalars,
            "param_groups": [{k: v for k, v in g.items() if k != "params"}
                             for g in inner.param_groups],
            "grad_scaler": None if scaler is None else scaler.state_dict()}


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    return a == b


def optimizer_tensors(optimizer, placed: list[Placed], saving: bool) -> dict[str, GlobalTensor]:
    """``optimizer.*`` entries: views of the inner optimizer's state tensors (and fp32
    masters), piece by piece of each parameter they hold."""
    by_param = {id(p.tensor): p for p in placed}
    inner = optimizer.torch_optimizer
    out: dict[str, GlobalTensor] = {}
    for slot in optimizer.state_slots():
        state = inner.state.get(slot.tensor, {})
        flats = {k: state[k].detach().view(-1) for k in _sharded_keys(state, slot.tensor)}
        if slot.separate_master:
            flats[MASTER_KEY] = slot.tensor.detach().view(-1)
        for seg in slot.segments:
            p = by_param[id(seg.param)]
            if saving and not p.writer:
                continue
            for key, flat in flats.items():
                entry = out.setdefault(f"optimizer.{p.name}.{key}", GlobalTensor(p.global_shape))
                add_flat_range(entry, flat[seg.start:seg.end], p.local_shape, p.origin,
                               seg.param_start)
    return out


def prepare_optimizer_state(optimizer, common: dict) -> None:
    """Give every inner optimizer parameter the saved state's entries (zeros, to be filled
    by the load; the shared scalars as saved) and the saved hyper-parameters."""
    inner = optimizer.torch_optimizer
    on_device = any(inner.defaults.get(k) for k in ("fused", "capturable"))
    for slot in optimizer.state_slots():
        state = {k: torch.zeros_like(slot.tensor) for k in common["state_keys"]}
        for key, value in common["scalars"].items():
            state[key] = (value.to(slot.tensor.device if on_device else "cpu", copy=True)
                          if isinstance(value, torch.Tensor) else value)
        inner.state[slot.tensor] = state
    if len(common["param_groups"]) == len(inner.param_groups):
        for group, saved in zip(inner.param_groups, common["param_groups"]):
            group.update(saved)
    scaler = getattr(optimizer, "grad_scaler", None)
    if scaler is not None and common.get("grad_scaler") is not None:
        scaler.load_state_dict(common["grad_scaler"])


def has_separate_masters(optimizer) -> bool:
    return any(slot.separate_master for slot in optimizer.state_slots())
