"""The 1F1B pipeline schedules (PipeDream-flush), plain and interleaved.

With ``P`` stages and ``M`` micro-batches, stage ``p`` runs:

* warmup: ``W = min(P - p - 1, M)`` forward passes, each output sent on at once;
* steady state: ``M - W`` rounds of one forward then one backward (1F1B), so at most
  ``P - p`` micro-batches have activations alive on this stage;
* cooldown: the ``W`` backward passes still owed.

The last stage turns each micro-batch's output into a loss with ``loss_func``, divides it
by ``M`` (so the accumulated gradient is the mean over micro-batches, exactly as the
no-pipelining schedule), and returns the loss dicts; other stages return ``[]``.
Gradients accumulate in the parameters' ``.grad``; the data-parallel and embedding
reductions happen afterwards in ``finalize_model_grads``.

Interleaved 1F1B (``--num-layers-per-virtual-pipeline-stage``): each stage holds ``V``
model chunks (chunk ``c`` of stage ``p`` is virtual stage ``c * P + p``), which shrinks
the bubble by ``V`` at the cost of ``V`` times more communication.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import nn

from megatron.core import parallel_state
from megatron.core.pipeline_parallel import p2p_communication as p2p
from megatron.core.timers import NO_TIMERS, Timers

def _unwrap(model: nn.Module) -> nn.Module:
    """Follow ``.module`` through wrappers until a model with ``set_input_tensor``."""
    while not hasattr(model, "set_input_tensor") and hasattr(model, "module"):
        model = model.module
    return model


def _activation_spec(model: nn.Module) -> tuple[int, torch.dtype, bool]:
    """(hidden size, activation dtype, sequence parallel) of a model behind any wrappers.

    The dtype is that of the parameters (half under Float16Module), which is what the
    stages exchange; the config is looked up through ``.module`` wrappers.
    """
    inner = model
    while getattr(inner, "config", None) is None and hasattr(inner, "module"):
        inner = inner.module
    config = getattr(inner, "config", None)
    if config is None:
        raise ValueError("pipeline schedule: the model has no .config (TransformerConfig) to "
                         "read hidden_size from; pass hidden_size= and dtype=")
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()),
                 config.params_dtype)
    return config.hidden_size, dtype, bool(getattr(config, "sequence_parallel", False))


def forward_step(forward_step_func: Callable, data_iterator: Iterator | None, model: nn.Module,
                 input_tensor: torch.Tensor | None, num_microbatches: int,
                 losses: list[dict], timers: Timers = NO_TIMERS) -> torch.Tensor:
    """One micro-batch forward on this stage (timed as ``forward-compute``).

    Returns:
        The output activation ``[s, b, h]`` on non-last stages; on the last stage the loss
        divided by ``num_microbatches`` (its dict is appended to ``losses``).
    """
    with timers.phase("forward-compute"):
        _unwrap(model).set_input_tensor(input_tensor)
        output_tensor, loss_func = forward_step_func(data_iterator, model)
        if parallel_state.is_pipeline_last_stage():
            result = loss_func(output_tensor)
            loss, loss_dict = result[0], result[1]
            output_tensor = loss / num_microbatches
            losses.append(loss_dict)
    return output_tensor


def backward_step(input_tensor: torch.Tensor | None, output_tensor: torch.Tensor,
                  output_tensor_grad: torch.Tensor | None,
                  grad_scale_func: Callable | None,
                  timers: Timers = NO_TIMERS) -> torch.Tensor | None:
    """Backpropagate one micro-batch through this stage (timed as ``backward-compute``).

    Args:
        input_tensor: the received activation ``[s, b, h]`` (None on the first stage).
        output_tensor: this stage's output (the scaled loss on the last stage).
        output_tensor_grad: gradient from the next stage (None on the last stage).
        grad_scale_func: loss scaling applied to the loss on the last stage.

    Returns:
        The gradient of ``input_tensor`` to send to the previous stage, or None.
    """
    with timers.phase("backward-compute"):
        if input_tensor is not None:
            input_tensor.retain_grad()
        if output_tensor_grad is None and grad_scale_func is not None:
            output_tensor = grad_scale_func(output_tensor)
        torch.autograd.backward(output_tensor, grad_tensors=output_tensor_grad)
    return None if input_tensor is None else input_tensor.grad


class _Runner:
    """Forward/backward of one model chunk, keeping the micro-batches whose backward is
    still owed in a FIFO (1F1B runs backwards in forward order)."""

    def __init__(self, forward_step_func, data_iterator, model, num_microbatches: int,
                 forward_only: bool, grad_scale_func, timers: Timers = NO_TIMERS):
        self.forward_step_func, self.data_iterator = forward_step_func, data_iterator
        self.timers = timers
        self.model = model
        self.num_microbatches, self.forward_only = num_microbatches, forward_only
        self.grad_scale_func = grad_scale_func
        self.losses: list[dict] = []
        self.pending: list[tuple[torch.Tensor | None, torch.Tensor]] = []  # (input, output)

    def forward(self, input_tensor: torch.Tensor | None) -> torch.Tensor:
        if input_tensor is not None and not self.forward_only:
            input_tensor.requires_grad_()
        with torch.set_grad_enabled(not self.forward_only):
            out = forward_step(self.forward_step_func, self.data_iterator, self.model,
                               input_tensor, self.num_microbatches, self.losses, self.timers)
        if not self.forward_only:
            self.pending.append((input_tensor, out))
        return out

    def backward(self, output_grad: torch.Tensor | None) -> torch.Tensor | None:
        input_tensor, output_tensor = self.pending.pop(0)
        return backward_step(input_tensor, output_tensor, output_grad, self.grad_scale_func,
                             self.timers)


def _check_args(model, num_microbatches: int) -> nn.Module:
    if isinstance(model, (list, tuple)):
        if len(model) != 1:
            raise ValueError("1F1B without interleaving takes one model chunk, got "
                             f"{len(model)}; use --num-layers-per-virtual-pipeline-stage "
                             "only with the interleaved schedule")
        model = model[0]
    if num_microbatches < 1:
        raise ValueError(f"num_microbatches must be >= 1, got {num_microbatches}")
    return model


def forward_backward_pipelining_without_interleaving(
        *, forward_step_func: Callable, data_iterator: Iterator | None, model,
        num_microbatches: int, seq_length: int, micro_batch_size: int,
        forward_only: bool = False, grad_scale_func: Callable | None = None,
        hidden_size: int | None = None, dtype: torch.dtype | None = None,
        timers: Timers = NO_TIMERS) -> list[dict]:
    """Run forward and backward of ``num_microbatches`` micro-batches with 1F1B.

    Args:
        forward_step_func: ``(data_iterator, model) -> (output_tensor, loss_func)``.
        data_iterator: micro-batch iterator (may be None on stages that read no data).
        model: this stage's model (or a one-element list of it).
        num_microbatches: micro-batches per step on this data-parallel rank.
        seq_length: sequence length of this step (after any curriculum truncation).
        micro_batch_size: sequences per micro-batch.
        forward_only: evaluation: no backward passes and no gradient exchange.
        grad_scale_func: multiplies the loss before backward (fp16 loss scaling).
        hidden_size, dtype: activation size/dtype; default from ``model.config`` and the
            parameters' dtype.
        timers: times each micro-batch's compute and exchanges (level 2).

    Returns:
        One loss dict per micro-batch on the last stage, ``[]`` elsewhere.
    """
    model = _check_args(model, num_microbatches)
    shape, dtype = _activation_shape(model, seq_length, micro_batch_size, hidden_size, dtype)
    stages = parallel_state.get_pipeline_model_parallel_world_size()
    stage = parallel_state.get_pipeline_model_parallel_rank()
    num_warmup = min(stages - stage - 1, num_microbatches)
    num_steady = num_microbatches - num_warmup
    runner = _Runner(forward_step_func, data_iterator, model, num_microbatches, forward_only,
                     grad_scale_func, timers)
    run_forward, run_backward = runner.forward, runner.backward
    comm = p2p.TimedP2P(timers)

    for _ in range(num_warmup):
        output = run_forward(comm.recv_forward(shape, dtype))
        comm.send_forward(output, shape, dtype)

    input_tensor = comm.recv_forward(shape, dtype) if num_steady > 0 else None
    for i in range(num_steady):
        last = i == num_steady - 1
        output = run_forward(input_tensor)
        if forward_only:
            comm.send_forward(output, shape, dtype)
            input_tensor = None if last else comm.recv_forward(shape, dtype)
            continue
        output_grad = comm.send_forward_recv_backward(output, shape, dtype)
        input_grad = run_backward(output_grad)
        if last:
            input_tensor = None
            comm.send_backward(input_grad, shape, dtype)
        else:
            input_tensor = comm.send_backward_recv_forward(input_grad, shape, dtype)

    if not forward_only:
        for _ in range(num_warmup):
            output_grad = comm.recv_backward(shape, dtype)
            comm.send_backward(run_backward(output_grad), shape, dtype)
    return runner.losses


class _InterleavedState:
    """Per-chunk queues of the interleaved schedule (virtual micro-batch ``k`` = the k-th
    forward or backward this rank runs, over all chunks)."""

    def __init__(self, forward_step_func, data_iterators, chunks, num_microbatches,
                 forward_only, grad_scale_func, timers: Timers = NO_TIMERS):
        self.forward_step_func, self.iterators = forward_step_func, data_iterators
        self.timers, self.comm = timers, p2p.TimedP2P(timers)
        self.chunks = chunks
        self.num_microbatches, self.forward_only = num_microbatches, forward_only
        self.grad_scale_func = grad_scale_func
        self.stages = parallel_state.get_pipeline_model_parallel_world_size()
        self.num_chunks = len(chunks)
        self.inputs = [[] for _ in chunks]
        self.outputs = [[] for _ in chunks]
        self.output_grads = [[] for _ in chunks]
        self.losses: list[dict] = []

    def chunk_id(self, k: int, forward: bool) -> int:
        """Chunk of virtual micro-batch ``k``: groups of P micro-batches per chunk in turn."""
        chunk = (k % (self.stages * self.num_chunks)) // self.stages
        return chunk if forward else self.num_chunks - 1 - chunk

    def forward(self, k: int) -> torch.Tensor:
        c = self.chunk_id(k, True)
        parallel_state.set_virtual_pipeline_model_parallel_rank(c)
        if parallel_state.is_pipeline_first_stage() and \
                len(self.inputs[c]) == len(self.outputs[c]):
            self.inputs[c].append(None)  # the first virtual stage reads data, not activations
        input_tensor = self.inputs[c][-1]
        if input_tensor is not None and not self.forward_only:
            input_tensor.requires_grad_()
        with torch.set_grad_enabled(not self.forward_only):
            output = forward_step(self.forward_step_func, self.iterators[c], self.chunks[c],
                                  input_tensor, self.num_microbatches, self.losses,
                                  self.timers)
        self.outputs[c].append(output)
        return output

    def backward(self, k: int) -> torch.Tensor | None:
        c = self.chunk_id(k, False)
        parallel_state.set_virtual_pipeline_model_parallel_rank(c)
        if parallel_state.is_pipeline_last_stage() and not self.output_grads[c]:
            self.output_grads[c].append(None)  # the loss: no gradient from a next stage
        return backward_step(self.inputs[c].pop(0), self.outputs[c].pop(0),
                             self.output_grads[c].pop(0), self.grad_scale_func, self.timers)

    def sendable(self, output, chunk: int):
        """None where chunk ``chunk`` is the last virtual stage (its output is the loss)."""
        parallel_state.set_virtual_pipeline_model_parallel_rank(chunk)
        return None if parallel_state.is_pipeline_last_stage() else output

    def sendable_grad(self, grad, chunk: int):
        """None where chunk ``chunk`` is the first virtual stage (nothing before it)."""
        parallel_state.set_virtual_pipeline_model_parallel_rank(chunk)
        return None if parallel_state.is_pipeline_first_stage() else grad


def _activation_shape(model: nn.Module, seq_length: int, micro_batch_size: int,
                      hidden_size: int | None, dtype: torch.dtype | None):
    """``([s, b, h], dtype)`` of the activations the stages exchange."""
    if hidden_size is None or dtype is None:
        found_hidden, found_dtype, sequence_parallel = _activation_spec(model)
        hidden_size, dtype = hidden_size or found_hidden, dtype or found_dtype
        if sequence_parallel:  # activations between stages hold s / tp tokens per rank
            seq_length //= parallel_state.get_tensor_model_parallel_world_size()
    return (seq_length, micro_batch_size, hidden_size), dtype


def _chunk_iterators(data_iterator, num_chunks: int) -> list:
    if isinstance(data_iterator, (list, tuple)):
        if len(data_iterator) != num_chunks:
            raise ValueError(f"interleaved schedule: {len(data_iterator)} data iterators for "
                             f"{num_chunks} model chunks")
        return list(data_iterator)
    if data_iterator is None or num_chunks == 1:
        return [data_iterator] * num_chunks
    raise ValueError("interleaved schedule: give one data iterator per model chunk (each "
                     "yields the step's micro-batches), not one shared iterator")


def _interleaved_warmup(st: _InterleavedState, num_warmup: int, total: int,
                        all_warmup: bool, shape, dtype) -> None:
    first = parallel_state.is_pipeline_first_stage(ignore_virtual=True)
    last = parallel_state.is_pipeline_last_stage(ignore_virtual=True)
    parallel_state.set_virtual_pipeline_model_parallel_rank(0)
    st.inputs[0].append(st.comm.recv_forward(shape, dtype))  # None on the first stage
    for k in range(num_warmup):
        output = st.sendable(st.forward(k), st.chunk_id(k, True))
        next_chunk = st.chunk_id(k + 1, True)
        recv_prev = not (first and next_chunk == 0) and k != total - 1
        # The last warmup exchange also fetches the first gradient the steady state needs.
        recv_next = k == num_warmup - 1 and not st.forward_only and not all_warmup and not last
        input_tensor, output_grad = st.comm.send_forward_backward_recv_forward_backward(
            output, None, recv_prev, recv_next, shape, dtype)
        if recv_prev:
            st.inputs[next_chunk].append(input_tensor)
        if recv_next:
            st.output_grads[st.num_chunks - 1].append(output_grad)


def _interleaved_steady(st: _InterleavedState, num_warmup: int, total: int, shape,
                        dtype) -> None:
    first = parallel_state.is_pipeline_first_stage(ignore_virtual=True)
    last = parallel_state.is_pipeline_last_stage(ignore_virtual=True)
    p, v = st.stages, st.num_chunks
    steady = total - num_warmup
    for i in range(steady):
        fk, bk = i + num_warmup, i
        output = st.sendable(st.forward(fk), st.chunk_id(fk, True))
        input_grad = st.sendable_grad(st.backward(bk), st.chunk_id(bk, False))
        # What arrives now: on the first stage an activation sent P - 1 forwards ago by the
        # last stage (wrapping to the next chunk); elsewhere the next forward's input.
        recv_prev, next_f = True, st.chunk_id(fk + 1, True)
        if first:
            next_f = st.chunk_id(fk - (p - 1), True)
            recv_prev = next_f != v - 1
            next_f += 1
        recv_next, next_b = True, st.chunk_id(bk + 1, False)
        if last:
            next_b = st.chunk_id(bk - (p - 1), False)
            recv_next = next_b != 0
            next_b -= 1
        recv_prev = recv_prev and i != steady - 1
        input_tensor, output_grad = st.comm.send_forward_backward_recv_forward_backward(
            output, input_grad, recv_prev, recv_next, shape, dtype)
        if recv_prev:
            st.inputs[next_f].append(input_tensor)
        if recv_next:
            st.output_grads[next_b].append(output_grad)


def _interleaved_cooldown(st: _InterleavedState, num_warmup: int, total: int,
                          all_warmup: bool, shape, dtype) -> None:
    last = parallel_state.is_pipeline_last_stage(ignore_virtual=True)
    if all_warmup:
        parallel_state.set_virtual_pipeline_model_parallel_rank(st.num_chunks - 1)
        st.output_grads[st.num_chunks - 1].append(st.comm.recv_backward(shape, dtype))
    for k in range(total - num_warmup, total):
        input_grad = st.sendable_grad(st.backward(k), st.chunk_id(k, False))
        next_b = st.chunk_id(k + 1, False)
        recv_next = not (last and next_b == st.num_chunks - 1) and k != total - 1
        _, output_grad = st.comm.send_forward_backward_recv_forward_backward(
            None, input_grad, False, recv_next, shape, dtype)
        if recv_next:
            st.output_grads[next_b].append(output_grad)


def forward_backward_pipelining_with_interleaving(
        *, forward_step_func: Callable, data_iterator, model, num_microbatches: int,
        seq_length: int, micro_batch_size: int, forward_only: bool = False,
        grad_scale_func: Callable | None = None, hidden_size: int | None = None,
        dtype: torch.dtype | None = None, timers: Timers = NO_TIMERS) -> list[dict]:
    """Interleaved 1F1B over this stage's ``V`` model chunks (Megatron's order).

    Args:
        model: the ``V`` chunks of this stage, chunk ``c`` built with virtual pipeline
            rank ``c`` (it holds layers of virtual stage ``c * P + p``).
        data_iterator: one iterator per chunk (each yields this step's micro-batches;
            only the first and the last virtual stage read them), or None.
        num_microbatches: must be a multiple of the pipeline size.
        Other arguments as in ``forward_backward_pipelining_without_interleaving``.

    Returns:
        One loss dict per micro-batch on the last stage, ``[]`` elsewhere.
    """
    chunks = list(model) if isinstance(model, (list, tuple)) else [model]
    stages = parallel_state.get_pipeline_model_parallel_world_size()
    if num_microbatches < 1 or num_microbatches % stages != 0:
        raise ValueError(f"interleaved schedule: {num_microbatches} micro-batches per step is "
                         f"not a positive multiple of the pipeline size {stages}")
    shape, dtype = _activation_shape(chunks[0], seq_length, micro_batch_size, hidden_size, dtype)
    st = _InterleavedState(forward_step_func, _chunk_iterators(data_iterator, len(chunks)),
                           chunks, num_microbatches, forward_only, grad_scale_func, timers)
    total = num_microbatches * len(chunks)
    all_warmup = forward_only or num_microbatches == stages
    rank = parallel_state.get_pipeline_model_parallel_rank()
    num_warmup = total if all_warmup else \
        min((stages - rank - 1) * 2 + (len(chunks) - 1) * stages, total)
    try:
        _interleaved_warmup(st, num_warmup, total, all_warmup, shape, dtype)
        _interleaved_steady(st, num_warmup, total, shape, dtype)
        if not forward_only:
            _interleaved_cooldown(st, num_warmup, total, all_warmup, shape, dtype)
    finally:
        parallel_state.set_virtual_pipeline_model_parallel_rank(0)
    return st.losses
