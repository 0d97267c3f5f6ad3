"""LayerNorm: apex's fused kernel when it is installed and CUDA is present, else torch's."""
from __future__ import annotations

import torch
from torch import nn

try:  # apex is optional: never fail for its absence
    from apex.normalization import MixedFusedLayerNorm as _ApexLayerNorm
except Exception:  # ImportError, or a broken CUDA extension build
    try:
        from apex.normalization import FusedLayerNorm as _ApexLayerNorm
    except Exception:
        _ApexLayerNorm = None


def apex_available() -> bool:
    return _ApexLayerNorm is not None and torch.cuda.is_available()


def LayerNorm(hidden_size: int, eps: float = 1e-5, sequence_parallel: bool = False,
              dtype: torch.dtype = torch.float32) -> nn.Module:
    """Build a LayerNorm over the last dimension.

    Args:
        hidden_size: normalised dimension.
        eps: epsilon (``--layernorm-epsilon``).
        sequence_parallel: mark the weights so their grads are summed over the
            tensor-parallel group (each rank saw only part of the sequence).
        dtype: parameter dtype.
    """
    if apex_available():
        norm = _ApexLayerNorm(hidden_size, eps=eps)
        norm.to(dtype=dtype)
    else:
        norm = nn.LayerNorm(hidden_size, eps=eps, dtype=dtype)
    for p in norm.parameters():
        p.sequence_parallel = sequence_parallel
    return norm


FusedLayerNorm = LayerNorm
MixedFusedLayerNorm = LayerNorm
