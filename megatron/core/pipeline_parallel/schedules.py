"""Forward/backward schedules; the no-pipelining one lives here, 1F1B in
``pipelined_schedules.py``."""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Iterator

import torch

from megatron.core import parallel_state
from megatron.core.timers import NO_TIMERS, Timers


def forward_backward_no_pipelining(*, forward_step_func: Callable, data_iterator: Iterator | list,
                                   model: torch.nn.Module | list[torch.nn.Module],
                                   num_microbatches: int, seq_length: int, micro_batch_size: int,
                                   forward_only: bool = False,
                                   grad_scale_func: Callable | None = None,
                                   timers: Timers = NO_TIMERS,
                                   no_sync_func: Callable[[], ContextManager] | None = None
                                   ) -> list[dict]:
    """Run ``num_microbatches`` forward (and backward) passes, accumulating gradients.

    Each micro-batch loss is divided by ``num_microbatches`` so the accumulated gradient
    is that of the mean loss; ``grad_scale_func`` (the fp16 loss scale) is applied to the
    loss right before backward. Every micro-batch but the last runs inside
    ``no_sync_func()`` when given (FSDP2: reduce-scatter the gradients once, after the
    last backward).

    Args:
        forward_step_func: ``fn(data_iterator, model) -> (output_tensor, loss_func)``.
        data_iterator: the iterator (or a one-element list of it).
        model: the model (or a one-element list of it).
        num_microbatches: micro-batches per global batch on this DP rank.
        seq_length, micro_batch_size: unused here (the pipelined schedule needs them).
        forward_only: evaluation; no backward.
        grad_scale_func: ``fn(loss) -> scaled loss``.
        timers: times each micro-batch's ``forward-compute`` and ``backward-compute``
            (level 2).
        no_sync_func: ``fn() -> context`` deferring the data-parallel gradient reduction.

    Returns:
        One loss dict per micro-batch, as returned by ``loss_func``.
    """
    del seq_length, micro_batch_size
    if isinstance(model, list):
        if len(model) != 1:
            raise ValueError("forward_backward_no_pipelining takes one model chunk, "
                             f"got {len(model)}")
        model = model[0]
    if isinstance(data_iterator, list):
        data_iterator = data_iterator[0]
    losses = []
    context = torch.no_grad() if forward_only else torch.enable_grad()
    with context:
        for i in range(num_microbatches):
            last = forward_only or no_sync_func is None or i == num_microbatches - 1
            with contextlib.nullcontext() if last else no_sync_func():
                with timers.phase("forward-compute"):
                    output_tensor, loss_func = forward_step_func(data_iterator, model)
                    loss, loss_dict = loss_func(output_tensor)
                losses.append(loss_dict)
                if forward_only:
                    continue
                with timers.phase("backward-compute"):
                    loss = loss / num_microbatches
                    if grad_scale_func is not None:
                        loss = grad_scale_func(loss)
                    loss.backward()
    return losses


def get_forward_backward_func() -> Callable:
    """The schedule for this rank's pipeline layout (same keyword signature): interleaved
    1F1B when a virtual pipeline size is set (``model`` and ``data_iterator`` are then
    lists, one per chunk), plain 1F1B for PP > 1, else no pipelining."""
    if parallel_state.get_pipeline_model_parallel_world_size() > 1:
        from megatron.core.pipeline_parallel import pipelined_schedules
        if parallel_state.get_virtual_pipeline_model_parallel_world_size() is not None:
            return pipelined_schedules.forward_backward_pipelining_with_interleaving
        return pipelined_schedules.forward_backward_pipelining_without_interleaving
    return forward_backward_no_pipelining
