"""The attention slot: self-attention with heads split over the tensor-parallel ranks.

Hidden states are ``[s, b, h]``; masks are ``None`` (plain causal) or a bool
``[b|1, 1, s, s]`` tensor with ``True`` = masked out (docs/CONTRACTS.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from megatron.core import parallel_state, tensor_parallel
from megatron.core.tensor_parallel.utils import divide
from megatron.model.config import TransformerConfig
from megatron.model.dropout import tp_rng_fork
from megatron.model.rotary import apply_rotary_pos_emb


def core_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   attention_mask: torch.Tensor | None, dropout_p: float) -> torch.Tensor:
    """Scaled dot-product attention on ``[s, b, n, d]`` inputs -> context ``[s, b, n*d]``."""
    q, k, v = (x.permute(1, 2, 0, 3) for x in (query, key, value))  # [b, n, s, d]
    if attention_mask is None:
        ctx = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    else:
        keep = ~attention_mask
        # A query row with every key masked (padding) would give NaN; let it attend to
        # everything instead: its output is never used by a loss.
        keep = keep | ~keep.any(dim=-1, keepdim=True)
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=dropout_p)
    s, b = query.shape[0], query.shape[1]
    return ctx.permute(2, 0, 1, 3).reshape(s, b, -1)


class ParallelAttention(nn.Module):
    """Self-attention with heads split over the tensor-parallel ranks."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        tp = parallel_state.get_tensor_model_parallel_world_size()
        self.heads_per_partition = divide(config.num_attention_heads, tp)
        self.head_dim = config.kv_channels
        self.attention_dropout = config.attention_dropout
        self.recompute_core = config.recompute_granularity == "selective"
        proj = config.kv_channels * config.num_attention_heads
        # Output laid out per head as [q k v], so contiguous column splits are whole heads.
        self.query_key_value = tensor_parallel.ColumnParallelLinear(
            config.hidden_size, 3 * proj, config=config, init_method=config.init_method,
            bias=config.add_bias_linear)
        self.dense = tensor_parallel.RowParallelLinear(
            proj, config.hidden_size, config=config,
            init_method=config.output_layer_init_method, bias=config.add_bias_linear)

    def _core(self, q, k, v, mask):
        p = self.attention_dropout if self.training else 0.0
        if p == 0.0:
            return core_attention(q, k, v, mask, 0.0)
        # heads differ per rank, so their dropout draws from the tensor-parallel RNG
        with tp_rng_fork():
            return core_attention(q, k, v, mask, p)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None,
                rotary_pos_emb: torch.Tensor | None = None) -> torch.Tensor:
        """[s, b, h] -> [s, b, h]; ``rotary_pos_emb`` is [s, b, 1, d_rot] or None."""
        qkv, _ = self.query_key_value(hidden)  # [s, b, 3 * n/tp * d]
        s, b = qkv.shape[0], qkv.shape[1]
        qkv = qkv.view(s, b, self.heads_per_partition, 3 * self.head_dim)
        q, k, v = qkv.split(self.head_dim, dim=-1)  # each [s, b, n/tp, d]
        if rotary_pos_emb is not None:
            q = apply_rotary_pos_emb(q, rotary_pos_emb)
            k = apply_rotary_pos_emb(k, rotary_pos_emb)
        if self.recompute_core and self.training:
            ctx = tensor_parallel.checkpoint(self._core, False, q, k, v, attention_mask)
        else:
            ctx = self._core(q, k, v, attention_mask)
        out, _ = self.dense(ctx)
        return out
