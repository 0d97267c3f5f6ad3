"""Which random stream a dropout mask draws from under tensor and sequence parallelism.

Activations that are the same on every tensor-parallel rank (the residual stream without
sequence parallelism) draw their masks from the default generator, seeded alike on those
ranks. Activations that differ per rank (attention heads, sequence-parallel slices) draw
from the tensor-parallel RNG (``tensor_parallel.get_rng_tracker``), seeded per rank.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from megatron.core import tensor_parallel


def tp_rng_fork():
    """Fork into the tensor-parallel RNG when it is seeded (single-process code may skip it)."""
    tracker = tensor_parallel.get_rng_tracker()
    return tracker.fork() if tracker.is_initialized() else contextlib.nullcontext()


def dropout_add(x: torch.Tensor, residual: torch.Tensor, p: float, training: bool,
                sequence_parallel: bool) -> torch.Tensor:
    """``residual + dropout(x)``; ``[s, b, h]`` (``[s/tp, b, h]`` under sequence parallel).

    Sequence-parallel ranks hold different tokens, so their masks come from the
    tensor-parallel RNG; otherwise every rank draws the same mask from the default one.
    """
    forking = sequence_parallel and training and p > 0
    with tp_rng_fork() if forking else contextlib.nullcontext():
        return residual + F.dropout(x, p=p, training=training)
