"""Where an optimizer's per-parameter state sits relative to the model's parameters.

A checkpoint that must load under another layout names optimizer state by the model
parameter it belongs to. Each optimizer says how its own tensors map onto them: a
:class:`StateSlot` is one tensor the inner ``torch.optim`` optimizer steps (its state,
e.g. Adam's ``exp_avg``, has the same shape), made of :class:`Segment` runs of model
parameters' flat elements. A plain optimizer has one slot per parameter holding all of
it; the ZeRO-1 optimizer's slots are flat shards that cut parameters anywhere.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Segment:
    """Flat elements ``[start, end)`` of the slot's tensor are the model parameter's flat
    elements ``[param_start, param_start + end - start)``."""

    param: nn.Parameter
    start: int
    end: int
    param_start: int


@dataclass(frozen=True)
class StateSlot:
    """One tensor the inner optimizer steps.

    Attributes:
        tensor: the inner optimizer's parameter (its state is keyed by it).
        segments: the model parameters' elements it holds, in order.
        separate_master: ``tensor`` is an fp32 copy of the weights (mixed precision),
            not the model's own weights, so a checkpoint stores it too.
    """

    tensor: torch.Tensor
    segments: tuple[Segment, ...]
    separate_master: bool


def whole_param_slots(params: list[nn.Parameter], tensors: list[torch.Tensor],
                      separate_master: bool) -> list[StateSlot]:
    """One slot per parameter (``tensors[i]`` steps ``params[i]`` whole)."""
    return [StateSlot(t, (Segment(p, 0, p.numel(), 0),), separate_master)
            for p, t in zip(params, tensors)]
