"""Rotary position embeddings computed from explicit position ids.

Frequencies come from ``position_ids`` rather than from ``0..s-1``, so tokens that were
gathered (random-LTD) or that belong to a later document keep their real positions.
"""
from __future__ import annotations

import torch

from megatron.model.precision import Fp32Module


class RotaryEmbedding(Fp32Module):
    """``inv_freq[i] = base^(-2i/dim)``; forward maps positions to rotation angles, both
    fp32 whatever the model's dtype (the module is never cast, see ``precision``).

    Args:
        dim: rotated dimensions per head (even).
        rotary_base: the ``base`` above (``--rotary-base``).
    """

    def __init__(self, dim: int, rotary_base: float = 10000.0) -> None:
        super().__init__()
        if dim % 2 != 0:
            raise ValueError(f"rotary dimension must be even, got {dim}")
        inv_freq = 1.0 / (rotary_base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        """``position_ids`` [b, s] long -> angles [s, b, 1, dim] fp32."""
        angles = position_ids.to(self.inv_freq.device, torch.float32).unsqueeze(-1) * self.inv_freq
        emb = torch.cat((angles, angles), dim=-1)  # [b, s, dim]
        return emb.transpose(0, 1).unsqueeze(2).contiguous()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(t: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``freqs.size(-1)`` dims of each head.

    Args:
        t: [s, b, n, d] queries or keys.
        freqs: [s, b, 1, d_rot] angles from RotaryEmbedding, ``d_rot <= d``.
    """
    rot_dim = freqs.size(-1)
    t_rot, t_pass = t[..., :rot_dim], t[..., rot_dim:]
    cos, sin = freqs.cos().to(t.dtype), freqs.sin().to(t.dtype)
    t_rot = t_rot * cos + _rotate_half(t_rot) * sin
    return torch.cat((t_rot, t_pass), dim=-1) if t_pass.numel() else t_rot
