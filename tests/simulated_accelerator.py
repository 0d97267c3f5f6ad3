"""A simulated CUDA device on a CPU-only machine, so device bugs fail in CPU tests as they
would under NCCL.

On a CPU machine every tensor is a CPU tensor and gloo takes any of them, so code that
hands a collective a tensor built on the host (``torch.tensor([n])`` without a device)
passes every test and dies on its first GPU step with NCCL's "No backend type associated
with device type cpu". Inside :func:`simulated_accelerator`:

* ``torch.cuda.is_available()`` is True and ``cuda:0`` tensors exist: each is a
  :class:`SimTensor`, a wrapper subclass whose data is a CPU tensor and whose device reads
  ``meta`` (the one device autograd on a CPU build runs on besides the CPU), so it is not
  a CPU tensor to anything that asks;
* every group's collectives take the accelerator (``megatron.core.devices`` treats gloo as
  NCCL), and a dispatch mode refuses, with NCCL's message, any collective handed a CPU
  tensor; the accepted ones run on the real gloo group with the wrapped CPU data, so the
  numbers are exactly those of a CPU run;
* mixing an accelerator tensor with a CPU tensor (other than a 0-dim scalar, a copy or an
  index) in one op is refused as CUDA refuses it.

What it does not cover: CUDA-only kernels (the Triton path runs as PyTorch), streams and
events, and device-side asserts. ``seen`` records the collectives checked.
"""
from __future__ import annotations

import contextlib
from collections import Counter
from typing import Iterator

import torch
import torch.distributed as dist
import torch.distributed.distributed_c10d as c10d
import torch.optim.optimizer as torch_optimizer
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

SIM = torch.device("meta")
CUDA_MESSAGE = "No backend type associated with device type cpu"
seen: Counter = Counter()      # c10d op name -> calls checked

_aten = torch.ops.aten
# ops where CUDA accepts a CPU operand beside a CUDA one (host/device copies, CPU indices)
_MIXING_ALLOWED = {_aten.copy_.default, _aten._to_copy.default, _aten.index.Tensor,
                   _aten.index_put_.default, _aten._index_put_impl_.default,
                   _aten.index_put.default, _aten.set_.source_Tensor}
_EXEMPT_COLLECTIVES = {"barrier"}   # NCCL's barrier makes its own CUDA tensor


class SimTensor(torch.Tensor):
    """A tensor on the simulated accelerator: CPU data in ``elem``, device ``meta``."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        out = torch.Tensor._make_wrapper_subclass(
            cls, elem.size(), strides=elem.stride(), storage_offset=elem.storage_offset(),
            dtype=elem.dtype, device=SIM, requires_grad=elem.requires_grad)
        out.elem = elem
        return out

    def __repr__(self) -> str:
        return f"SimTensor({self.elem!r})"

    def __reduce_ex__(self, protocol):
        return self.elem.__reduce_ex__(protocol)    # torch.save: the data, as a CPU tensor

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs or {})


def _is_accelerator(device) -> bool:
    if isinstance(device, int) and not isinstance(device, bool):
        return True                                 # .to(0) / .cuda(0)
    if isinstance(device, (str, torch.device)):
        return torch.device(device).type in ("cuda", "meta")
    return False


def _run(func, args, kwargs):
    """Run an aten/c10d op on the CPU data, refusing what CUDA/NCCL would refuse."""
    to_sim = explicit_cpu = False
    if "device" in kwargs and kwargs["device"] is not None:
        if _is_accelerator(kwargs["device"]):
            kwargs, to_sim = {**kwargs, "device": torch.device("cpu")}, True
        else:
            explicit_cpu = torch.device(kwargs["device"]).type == "cpu"
    if kwargs.get("pin_memory"):
        kwargs = {**kwargs, "pin_memory": False}
    sims: dict[int, SimTensor] = {}
    cpu: list[torch.Tensor] = []

    def unwrap(t):
        if isinstance(t, SimTensor):
            sims[id(t.elem)] = t
            return t.elem
        if isinstance(t, torch.Tensor) and t.device.type == "cpu":
            cpu.append(t)
        return t
    uargs, ukwargs = tree_map(unwrap, (args, kwargs))
    if func.namespace == "c10d" and func._opname not in _EXEMPT_COLLECTIVES:
        seen[func._opname] += 1
        if cpu:
            raise RuntimeError(f"{func._opname}: {CUDA_MESSAGE} (a collective over an "
                               f"accelerator group was handed a CPU tensor of shape "
                               f"{tuple(cpu[0].shape)})")
    elif sims and func not in _MIXING_ALLOWED and any(t.dim() > 0 for t in cpu):
        raise RuntimeError(f"{func}: Expected all tensors to be on the same device, but found "
                           f"at least two devices, cuda:0 and cpu!")
    out = func(*uargs, **ukwargs)
    wrap = (bool(sims) or to_sim) and not explicit_cpu

    def rewrap(t):
        if isinstance(t, torch.Tensor) and not isinstance(t, SimTensor):
            if id(t) in sims:
                return sims[id(t)]          # in-place ops return their input
            return SimTensor(t) if wrap else t
        return t
    return tree_map(rewrap, out)


class _Dispatch(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs or {})


def _is_data_setter(func) -> bool:
    owner = getattr(func, "__self__", None)
    return getattr(func, "__name__", "") == "__set__" and getattr(owner, "__name__", "") == "data"


class _Devices(TorchFunctionMode):
    """Rewrites ``cuda`` device arguments to the simulated device before torch parses
    them (a CPU build would try to initialise CUDA), and keeps ``.data`` assignments
    pointing the wrapper at the new data."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if _is_data_setter(func) and isinstance(args[0], SimTensor):
            out = func(*args)
            args[0].elem = args[1].elem if isinstance(args[1], SimTensor) else args[1]
            return out
        if func in (torch.Tensor.cuda,):
            return args[0].to(SIM)
        if func is torch.Tensor.tolist and isinstance(args[0], SimTensor):
            return args[0].elem.tolist()            # a device-to-host copy, as on CUDA
        if func is torch.Tensor.numpy and isinstance(args[0], SimTensor):
            raise TypeError("can't convert cuda:0 device type tensor to numpy. Use "
                            "Tensor.cpu() to copy the tensor to host memory first.")
        if func in (torch.Tensor.pin_memory,):
            return args[0]
        if func in (torch.Tensor.is_pinned,):
            return False
        if "device" in kwargs and _is_accelerator(kwargs["device"]):
            # a factory (torch.tensor, torch.zeros ...): build on the CPU, then wrap
            kwargs["device"] = torch.device("cpu")
            kwargs.pop("pin_memory", None)
            out = func(*args, **kwargs)
            return SimTensor(out) if isinstance(out, torch.Tensor) else out
        if func is torch.Tensor.to:
            args = tuple(SIM if i and _is_accelerator(a) else a for i, a in enumerate(args))
        return func(*args, **kwargs)


@contextlib.contextmanager
def simulated_accelerator() -> Iterator[None]:
    """Run the block as if on a CUDA machine whose process groups are NCCL's."""
    import megatron.core.devices as devices
    patches = {"is_available": lambda: True, "current_device": lambda: 0,
               "device_count": lambda: 1, "set_device": lambda _: None,
               "get_device_name": lambda *_: "simulated accelerator",
               "synchronize": lambda *_: None, "is_initialized": lambda: False,
               "get_rng_state": lambda *_: torch.zeros(16, dtype=torch.uint8),
               "set_rng_state": lambda *_: None}
    saved = {name: getattr(torch.cuda, name) for name in patches}
    saved_backends = devices.ACCELERATOR_BACKENDS
    get_backend_method = dist.ProcessGroup.__dict__["_get_backend"]   # restored as it was
    get_backend = dist.ProcessGroup._get_backend
    fused_devices = torch_optimizer._get_fused_kernels_supported_devices
    object_device = c10d._get_object_coll_device
    try:
        # object collectives (all_gather_object, ...) pick the group's device as torch does
        # for NCCL: the current CUDA device
        c10d._get_object_coll_device = lambda group=None: "cuda"
        # torch's fused AdamW runs on the accelerator (here: its CPU kernel on the data)
        torch_optimizer._get_fused_kernels_supported_devices = \
            lambda: [*fused_devices(), SIM.type]
        for name, fn in patches.items():
            setattr(torch.cuda, name, fn)
        # python-side lookups by tensor.device (batch_isend_irecv) find the CPU backend
        dist.ProcessGroup._get_backend = lambda self, device: get_backend(
            self, torch.device("cpu") if torch.device(device).type == SIM.type else device)
        devices.ACCELERATOR_BACKENDS = ("nccl", "gloo")   # gloo groups act as NCCL ones
        with _Devices(), _Dispatch():
            yield
    finally:
        devices.ACCELERATOR_BACKENDS = saved_backends
        c10d._get_object_coll_device = object_device
        dist.ProcessGroup._get_backend = get_backend_method
        torch_optimizer._get_fused_kernels_supported_devices = fused_devices
        for name, fn in saved.items():
            setattr(torch.cuda, name, fn)
