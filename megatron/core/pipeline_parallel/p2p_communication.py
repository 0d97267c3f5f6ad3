"""Point-to-point exchange of activations and gradients between adjacent pipeline stages.

Stage ``i`` sends its output activations ``[s, b, h]`` forward to stage ``i + 1`` and
receives the gradient of that output back from it. Shapes and dtypes are agreed in
advance (they follow from ``--seq-length``, ``--micro-batch-size`` and ``--hidden-size``),
so only the raw tensors travel.

All sends and receives of one call are posted together (``batch_isend_irecv``) and then
waited on, so two neighbours that send to each other at the same moment (1F1B steady
state) cannot deadlock. Works on gloo (CPU) and NCCL (GPU).

On the first stage every ``recv_forward`` returns None and ``send_backward`` does nothing;
on the last stage ``send_forward`` does nothing and ``recv_backward`` returns None.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist

from megatron.core import parallel_state
from megatron.core.devices import collective_device
from megatron.core.timers import Timers

Shape = Sequence[int]
_FORWARD_TAG, _BACKWARD_TAG = 1, 2  # gloo matches by tag; NCCL ignores tags (order matters)


def _communicate(tensor_send_next: torch.Tensor | None, tensor_send_prev: torch.Tensor | None,
                 recv_prev: bool, recv_next: bool, tensor_shape: Shape,
                 dtype: torch.dtype) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Post every send/receive of one exchange at once, then wait for all of them.

    Args:
        tensor_send_next: activation to send to the next stage, or None.
        tensor_send_prev: gradient to send to the previous stage, or None.
        recv_prev: receive an activation from the previous stage.
        recv_next: receive a gradient from the next stage.
        tensor_shape: shape of every received tensor, e.g. ``(s, b, h)``.
        dtype: dtype of every received tensor.

    Returns:
        ``(tensor_from_prev, tensor_from_next)``, None where nothing was received.
    """
    device = collective_device(parallel_state.get_pipeline_model_parallel_group())
    recv_prev_buf = torch.empty(tuple(tensor_shape), dtype=dtype, device=device) \
        if recv_prev else None
    recv_next_buf = torch.empty(tuple(tensor_shape), dtype=dtype, device=device) \
        if recv_next else None
    prev_rank = parallel_state.get_pipeline_model_parallel_prev_rank()
    next_rank = parallel_state.get_pipeline_model_parallel_next_rank()
    # Two channels, each with its own tag and always posted in the same order (activations
    # forward first, then gradients backward): with two stages "next" and "prev" are the
    # same peer, and the peer must match an activation with an activation.
    ops = []
    if tensor_send_next is not None:
        ops.append(dist.P2POp(dist.isend, _checked(tensor_send_next, tensor_shape, dtype),
                              next_rank, tag=_FORWARD_TAG))
    if recv_prev_buf is not None:
        ops.append(dist.P2POp(dist.irecv, recv_prev_buf, prev_rank, tag=_FORWARD_TAG))
    if tensor_send_prev is not None:
        ops.append(dist.P2POp(dist.isend, _checked(tensor_send_prev, tensor_shape, dtype),
                              prev_rank, tag=_BACKWARD_TAG))
    if recv_next_buf is not None:
        ops.append(dist.P2POp(dist.irecv, recv_next_buf, next_rank, tag=_BACKWARD_TAG))
    if ops:
        for req in dist.batch_isend_irecv(ops):
            req.wait()
    return recv_prev_buf, recv_next_buf


def _checked(tensor: torch.Tensor, shape: Shape, dtype: torch.dtype) -> torch.Tensor:
    """The tensor as it goes on the wire: detached, contiguous, of the agreed shape/dtype."""
    if tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
        raise RuntimeError(f"pipeline p2p: sending a tensor of shape {tuple(tensor.shape)} "
                           f"{tensor.dtype}, but the stages agreed on {tuple(shape)} {dtype} "
                           "(check --seq-length, --micro-batch-size, --hidden-size)")
    return tensor.detach().contiguous()


def recv_forward(tensor_shape: Shape, dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
    """Receive the input activation ``[s, b, h]`` from the previous stage."""
    if parallel_state.is_pipeline_first_stage():
        return None
    return _communicate(None, None, True, False, tensor_shape, dtype)[0]


def recv_backward(tensor_shape: Shape, dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
    """Receive the gradient of this stage's output ``[s, b, h]`` from the next stage."""
    if parallel_state.is_pipeline_last_stage():
        return None
    return _communicate(None, None, False, True, tensor_shape, dtype)[1]


def send_forward(output_tensor: torch.Tensor | None, tensor_shape: Shape,
                 dtype: torch.dtype = torch.float32) -> None:
    """Send this stage's output activation to the next stage."""
    if not parallel_state.is_pipeline_last_stage():
        _communicate(output_tensor, None, False, False, tensor_shape, dtype)


def send_backward(input_tensor_grad: torch.Tensor | None, tensor_shape: Shape,
                  dtype: torch.dtype = torch.float32) -> None:
    """Send the gradient of this stage's input activation to the previous stage."""
    if not parallel_state.is_pipeline_first_stage():
        _communicate(None, input_tensor_grad, False, False, tensor_shape, dtype)


def send_forward_recv_backward(output_tensor: torch.Tensor | None, tensor_shape: Shape,
                               dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
    """Send an activation forward and receive the gradient of an earlier one, together."""
    if parallel_state.is_pipeline_last_stage():
        return None
    return _communicate(output_tensor, None, False, True, tensor_shape, dtype)[1]


def send_backward_recv_forward(input_tensor_grad: torch.Tensor | None, tensor_shape: Shape,
                               dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
    """Send a gradient backward and receive the next input activation, together."""
    if parallel_state.is_pipeline_first_stage():
        return None
    return _communicate(None, input_tensor_grad, True, False, tensor_shape, dtype)[0]


def send_forward_backward_recv_forward_backward(
        output_tensor: torch.Tensor | None, input_tensor_grad: torch.Tensor | None,
        recv_prev: bool, recv_next: bool, tensor_shape: Shape,
        dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The interleaved schedule's exchange: the caller decides every direction.

    Unlike the helpers above this does not look at the (virtual) stage: pass None for a
    tensor not to send and False for a tensor not to receive.

    Returns:
        ``(input activation from the previous rank, output gradient from the next rank)``.
    """
    return _communicate(output_tensor, input_tensor_grad, recv_prev, recv_next,
                        tensor_shape, dtype)


# Each exchange's timer (Megatron's name, level 2) and the stage where the helper sends and
# receives nothing (not timed there, as in Megatron).
_P2P_TIMERS = {"recv_forward": ("forward-recv", "first"),
               "send_forward": ("forward-send", "last"),
               "recv_backward": ("backward-recv", "last"),
               "send_backward": ("backward-send", "first"),
               "send_forward_recv_backward": ("forward-send-backward-recv", "last"),
               "send_backward_recv_forward": ("backward-send-forward-recv", "first"),
               "send_forward_backward_recv_forward_backward":
                   ("forward-backward-send-forward-backward-recv", None)}


class TimedP2P:
    """This module's exchanges as attributes (``TimedP2P(timers).recv_forward(...)``),
    each timed under Megatron's name."""

    def __init__(self, timers: Timers) -> None:
        self.timers = timers

    def __getattr__(self, exchange: str):
        func, (name, idle_on) = globals()[exchange], _P2P_TIMERS[exchange]

        def timed(*args, **kwargs):
            idle = (idle_on == "first" and parallel_state.is_pipeline_first_stage()
                    or idle_on == "last" and parallel_state.is_pipeline_last_stage())
            if idle:
                return func(*args, **kwargs)
            with self.timers.phase(name):
                return func(*args, **kwargs)
        return timed
