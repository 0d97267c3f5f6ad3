"""The attention slot: self-attention with query groups split over the tensor-parallel ranks.

Grouped-query attention: ``n`` query heads share ``g`` key/value heads (``g`` divides
``n``; ``g == n`` is multi-head attention, ``g == 1`` multi-query). The fused
``query_key_value`` rows are laid out per query group as ``[q_1 .. q_m k v]`` with
``m = n / g`` (Megatron-LM's layout; per head ``[q k v]`` when ``g == n``), so a
contiguous column split gives each tensor-parallel rank whole groups: ``g / tp`` groups
and their ``n / tp`` query heads. ``g`` must divide by the tensor-parallel size.

Hidden states are ``[s, b, h]``; masks are ``None`` (plain causal) or a bool
``[b|1, 1, s, s]`` tensor with ``True`` = masked out (docs/CONTRACTS.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from megatron.core import parallel_state, tensor_parallel
from megatron.core.tensor_parallel.utils import divide
from megatron.errors import BadConfigError
from megatron.model.config import TransformerConfig
from megatron.model.dropout import tp_rng_fork
from megatron.model.rotary import apply_rotary_pos_emb


def core_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   attention_mask: torch.Tensor | None, dropout_p: float) -> torch.Tensor:
    """Scaled dot-product attention -> context ``[s, b, n*d]``.

    Args:
        query: [s, b, n, d].
        key, value: [s, b, g, d], ``g`` dividing ``n`` (query head ``j`` reads group
            ``j // (n / g)``).
    """
    if key.shape[2] != query.shape[2]:   # grouped-query: each group serves n/g heads
        per_group = query.shape[2] // key.shape[2]
        key, value = (x.repeat_interleave(per_group, dim=2) for x in (key, value))
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
    """Self-attention with query groups split over the tensor-parallel ranks."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        tp = parallel_state.get_tensor_model_parallel_world_size()
        heads, groups, d = config.num_attention_heads, config.num_query_groups, config.kv_channels
        if groups % tp != 0:
            raise BadConfigError(f"--num-query-groups {groups} is not divisible by "
                                 f"--tensor-model-parallel-size {tp} (each rank holds whole "
                                 "query groups)")
        self.heads_per_partition = divide(heads, tp)
        self.groups_per_partition = groups // tp
        self.head_dim = d
        self.attention_dropout = config.attention_dropout
        self.recompute_core = config.recompute_granularity == "selective"
        self.query_key_value = tensor_parallel.ColumnParallelLinear(
            config.hidden_size, (heads + 2 * groups) * d, config=config,
            init_method=config.init_method, bias=config.add_bias_linear)
        self.dense = tensor_parallel.RowParallelLinear(
            heads * d, config.hidden_size, config=config,
            init_method=config.output_layer_init_method, bias=config.add_bias_linear)
        # a layout conversion must keep the query groups whole (checkpointing.model_split)
        for p in (self.query_key_value.weight, self.query_key_value.bias, self.dense.weight):
            if p is not None:
                p.partition_units = groups

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
        qkv, _ = self.query_key_value(hidden)  # [s, b, g/tp * (m + 2) * d]
        s, b, d = qkv.shape[0], qkv.shape[1], self.head_dim
        qkv = qkv.view(s, b, self.groups_per_partition, -1)
        q, k, v = qkv.split([qkv.shape[-1] - 2 * d, d, d], dim=-1)
        q = q.reshape(s, b, self.heads_per_partition, d)  # [s, b, n/tp, d]; k, v [s, b, g/tp, d]
        if rotary_pos_emb is not None:
            q = apply_rotary_pos_emb(q, rotary_pos_emb)
            k = apply_rotary_pos_emb(k, rotary_pos_emb)
        if self.recompute_core and self.training:
            ctx = tensor_parallel.checkpoint(self._core, False, q, k, v, attention_mask)
        else:
            ctx = self._core(q, k, v, attention_mask)
        out, _ = self.dense(ctx)
        return out
