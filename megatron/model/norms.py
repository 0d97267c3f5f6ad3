"""The norms a model may use, by ``--normalization`` name: one class and one entry each.

Every entry is a class (or builder) ``(hidden_size, eps, sequence_parallel, dtype) ->
nn.Module`` normalising the last dimension; ``sequence_parallel`` marks its weights so
their gradients are summed over the tensor-parallel group (each rank saw part of the
sequence). Every norm computes its statistics in fp32 whatever the model's dtype
(``precision.py``). ``TransformerConfig.normalization`` is checked against ``NORMS``; the
layer spec, the final norm and BERT's head build from it.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from megatron.model.fused_layer_norm import LayerNorm

NormClass = Callable[..., nn.Module]

NORMS: dict[str, NormClass] = {
    "LayerNorm": LayerNorm,
}


def build_norm(config) -> nn.Module:
    """The model's norm (``config.normalization``) over ``config.hidden_size``."""
    return NORMS[config.normalization](config.hidden_size, config.layernorm_epsilon,
                                       config.sequence_parallel, config.params_dtype)
