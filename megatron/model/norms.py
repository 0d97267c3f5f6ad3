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

import torch
import torch.nn.functional as F
from torch import nn

from megatron.model.fused_layer_norm import LayerNorm

NormClass = Callable[..., nn.Module]


class RMSNorm(nn.Module):
    """``weight * x / sqrt(mean(x^2) + eps)`` over the last dimension (Llama's norm; no
    bias, no centring).

    The statistic and the normalised value are computed in fp32 and cast back to the
    input's dtype before the weight (as Megatron-LM and ``transformers``' Llama do), so a
    bf16 model normalises exactly as an fp32 one up to the final rounding: torch's
    ``rms_norm`` accumulates bf16/fp16 inputs in fp32 (no fp32 copy of the activation;
    tests/model/test_fp32_rules.py checks it).

    Args:
        hidden_size: normalised dimension.
        eps: epsilon (``--layernorm-epsilon``).
        sequence_parallel: the weight's gradient is summed over the tensor-parallel group.
        dtype: parameter dtype.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-5, sequence_parallel: bool = False,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size, dtype=dtype))
        self.weight.sequence_parallel = sequence_parallel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., h] -> [..., h] in ``x``'s dtype."""
        return F.rms_norm(x, (x.shape[-1],), eps=self.eps) * self.weight

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


NORMS: dict[str, NormClass] = {
    "LayerNorm": LayerNorm,
    "RMSNorm": RMSNorm,
}


def build_norm(config) -> nn.Module:
    """The model's norm (``config.normalization``) over ``config.hidden_size``."""
    return NORMS[config.normalization](config.hidden_size, config.layernorm_epsilon,
                                       config.sequence_parallel, config.params_dtype)
