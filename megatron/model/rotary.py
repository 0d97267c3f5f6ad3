"""Rotary position embeddings computed from explicit position ids.

Frequencies come from ``position_ids`` rather than from ``0..s-1``, so tokens that were
gathered (random-LTD) or that belong to a later document keep their real positions.
"""
from __future__ import annotations

import math

import torch

from megatron.model.precision import Fp32Module

# Llama-3's rope scaling constants (Megatron-LM and Meta's reference fix them too)
LLAMA3_LOW_FREQ_FACTOR, LLAMA3_HIGH_FREQ_FACTOR, LLAMA3_ORIGINAL_POSITIONS = 1.0, 4.0, 8192


def llama3_inv_freq(inv_freq: torch.Tensor, factor: float) -> torch.Tensor:
    """Llama-3's rope scaling: frequencies whose wavelength exceeds the original context
    (8192 / ``LLAMA3_LOW_FREQ_FACTOR``) are divided by ``factor``, those shorter than
    8192 / ``LLAMA3_HIGH_FREQ_FACTOR`` kept, the band between interpolated smoothly.
    fp32 in, fp32 out."""
    low_wavelen = LLAMA3_ORIGINAL_POSITIONS / LLAMA3_LOW_FREQ_FACTOR
    high_wavelen = LLAMA3_ORIGINAL_POSITIONS / LLAMA3_HIGH_FREQ_FACTOR
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (LLAMA3_ORIGINAL_POSITIONS / wavelen - LLAMA3_LOW_FREQ_FACTOR) / \
        (LLAMA3_HIGH_FREQ_FACTOR - LLAMA3_LOW_FREQ_FACTOR)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, smoothed, scaled)


class RotaryEmbedding(Fp32Module):
    """``inv_freq[i] = base^(-2i/dim)`` (Llama-3 scaled with ``scaling_factor``); forward
    maps positions to rotation angles, both fp32 whatever the model's dtype (the module is
    never cast, see ``precision``).

    Args:
        dim: rotated dimensions per head (even).
        rotary_base: the ``base`` above (``--rotary-base``).
        scaling_factor: Llama-3 rope scaling by this factor (``--use-rope-scaling
            --rope-scaling-factor``), or None.
    """

    def __init__(self, dim: int, rotary_base: float = 10000.0,
                 scaling_factor: float | None = None) -> None:
        super().__init__()
        if dim % 2 != 0:
            raise ValueError(f"rotary dimension must be even, got {dim}")
        inv_freq = 1.0 / (rotary_base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        if scaling_factor is not None:
            inv_freq = llama3_inv_freq(inv_freq, scaling_factor)
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
