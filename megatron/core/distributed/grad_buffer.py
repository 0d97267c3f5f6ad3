"""Contiguous main-gradient buffers (Megatron-core's DDP grad buffer, in a smaller form).

Every trainable parameter gets ``param.main_grad``: a view into one contiguous buffer that
it shares with the rank's other parameters of the same dtype reducing over the same group
(dense parameters over the data-parallel group, MoE experts over the expert-data-parallel
group). A hook that runs once autograd has accumulated a parameter's ``.grad``
(``register_post_accumulate_grad_hook``) adds it into ``main_grad`` and frees ``.grad``, so
micro-batches accumulate in the buffer's dtype (fp32 under ``--bf16`` and with
``--accumulate-allreduce-grads-in-fp32``) and no per-parameter gradient outlives its
backward.

Layout: the parameters end to end in the order given (the optimizer's param-group order),
zero-padded at the end so the buffer splits into ``group size`` equal shards::

    | p0 | p1 | ... | pad |      rank r's shard: [r * shard_numel, (r + 1) * shard_numel)

One call reduces the whole buffer, gradients divided by the data-parallel size first
(keeps fp16 sums in range; the same numbers in fp32):

* :meth:`GradBuffer.all_reduce`: every rank gets the mean, in buckets that are views of
  the buffer (no copies); the plain optimizers read it.
* :meth:`GradBuffer.reduce_scatter`: rank r gets the mean of its shard, written in place
  into its own slice (ZeRO-1, the distributed optimizer).

Under the distributed optimizer the parameters live in a parameter buffer of the same
layout (``param.data`` is a view of it), so :meth:`GradBuffer.all_gather_params` gathers
the updated shards straight into the model's weights, in place.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
import torch.distributed as dist
from torch import nn

from megatron.core import parallel_state

_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def _accumulate_into_main_grad(param: nn.Parameter) -> None:
    """Post-accumulate-grad hook: move this backward's ``.grad`` into ``main_grad``."""
    param.main_grad.add_(param.grad)
    param.grad = None


def _group_size_and_rank(group) -> tuple[int, int]:
    if group is None or not (dist.is_available() and dist.is_initialized()):
        return 1, 0
    return dist.get_world_size(group), dist.get_rank(group)


class GradBuffer:
    """One contiguous gradient buffer (and, optionally, parameter buffer) for ``params``.

    Args:
        params: the parameters, in layout order; all of one dtype and device.
        grad_dtype: the dtype gradients accumulate and reduce in.
        group: the process group the gradients are reduced over (None: no reduction).
        divisor: the gradients are divided by it before the sum (the data-parallel size).
        with_param_buffer: also move the parameters into one contiguous buffer (ZeRO-1).
    """

    def __init__(self, params: list[nn.Parameter], grad_dtype: torch.dtype, group,
                 divisor: int, with_param_buffer: bool = False) -> None:
        if not params:
            raise ValueError("GradBuffer needs at least one parameter")
        self.params = list(params)
        self.group, self.divisor = group, divisor
        self.size, self.rank = _group_size_and_rank(group)
        numel = sum(p.numel() for p in self.params)
        self.shard_numel = math.ceil(numel / self.size)
        self.padded_numel = self.shard_numel * self.size
        self.sharded = with_param_buffer   # reduced by the distributed optimizer's step
        device = self.params[0].device
        self.grad_data = torch.zeros(self.padded_numel, dtype=grad_dtype, device=device)
        self.param_data = None
        if with_param_buffer:
            self.param_data = torch.zeros(self.padded_numel, dtype=self.params[0].dtype,
                                          device=device)
        self.ranges: list[tuple[int, int]] = []   # each parameter's [start, end)
        offset = 0
        for p in self.params:
            start, offset = offset, offset + p.numel()
            self.ranges.append((start, offset))
            if self.param_data is not None:
                self.param_data[start:offset].copy_(p.data.reshape(-1))
                p.data = self.param_data[start:offset].view_as(p)
            self._attach(p, self.grad_data[start:offset].view_as(p))

    def _attach(self, param: nn.Parameter, main_grad: torch.Tensor) -> None:
        old = getattr(param, "_main_grad_hook", None)
        if old is not None:        # a second optimizer over the same model: one hook only
            old.remove()
        param.main_grad = main_grad
        param.main_grad_buffer = self
        param._main_grad_hook = param.register_post_accumulate_grad_hook(
            _accumulate_into_main_grad)

    @property
    def shard_range(self) -> tuple[int, int]:
        """This rank's ``[start, end)`` of the buffer."""
        return self.rank * self.shard_numel, (self.rank + 1) * self.shard_numel

    def zero(self) -> None:
        """Clear the gradients (the buffer and any ``.grad`` left by hand)."""
        self.grad_data.zero_()
        for p in self.params:
            p.grad = None

    def all_reduce(self, bucket_numel: int) -> None:
        """Average the whole buffer over the group, ``bucket_numel`` elements per call."""
        bucket_numel = max(1, bucket_numel)
        if self.divisor != 1:
            self.grad_data.div_(self.divisor)
        if self.size == 1:
            return
        for start in range(0, self.padded_numel, bucket_numel):
            dist.all_reduce(self.grad_data[start:start + bucket_numel], group=self.group)

    def reduce_scatter(self) -> torch.Tensor:
        """Average over the group into this rank's shard (in place); returns the shard
        view ``[shard_numel]``. The rest of the buffer is left undefined."""
        if self.divisor != 1:
            self.grad_data.div_(self.divisor)
        start, end = self.shard_range
        shard = self.grad_data[start:end]
        if self.size > 1:
            _reduce_scatter(shard, self.grad_data, group=self.group)
        return shard

    def all_gather_params(self) -> None:
        """Every rank's updated shard of the parameter buffer, gathered in place."""
        if self.size > 1:
            start, end = self.shard_range
            _all_gather(self.param_data, self.param_data[start:end], group=self.group)


def grad_buffers_of(params: Iterable[nn.Parameter]) -> list[GradBuffer]:
    """The distinct buffers holding ``params``' main grads, in order of first appearance."""
    seen: dict[int, GradBuffer] = {}
    for p in params:
        buffer = getattr(p, "main_grad_buffer", None)
        if buffer is not None and id(buffer) not in seen:
            seen[id(buffer)] = buffer
    return list(seen.values())


def build_grad_buffers(param_groups: list[dict], grad_dtype: Callable[[torch.dtype], torch.dtype],
                       with_param_buffer: bool = False) -> list[GradBuffer]:
    """One buffer per (parameter dtype, dense or expert) over ``param_groups``' parameters.

    Dense parameters reduce over the data-parallel group, MoE expert parameters
    (``expert_parallel=True``) over the expert-data-parallel group; both are divided by
    the whole data-parallel size (the all-to-all backward already summed the tokens of the
    expert-parallel ranks). Within a buffer the parameters keep the groups' order, so each
    param group is one contiguous run of it.

    Args:
        param_groups: torch-style groups ``[{"params": [...], ...}]``.
        grad_dtype: maps a parameter dtype to its gradient dtype (``OptimizerConfig.grad_dtype``).
        with_param_buffer: parameters move into a parameter buffer (distributed optimizer).
    """
    kinds: dict[tuple[torch.dtype, bool], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for g in param_groups:
        for p in g["params"]:
            if id(p) in seen:
                raise ValueError("a parameter appears in two param groups")
            seen.add(id(p))
            kinds.setdefault((p.dtype, bool(getattr(p, "expert_parallel", False))), []).append(p)
    divisor = parallel_state.get_data_parallel_world_size()
    buffers = []
    for (dtype, expert), params in kinds.items():
        group = (parallel_state.get_expert_data_parallel_group() if expert
                 else parallel_state.get_data_parallel_group())
        buffers.append(GradBuffer(params, grad_dtype(dtype), group, divisor, with_param_buffer))
    return buffers
