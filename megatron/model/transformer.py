"""The transformer: MLP, self-attention, pre-LayerNorm layer and the layer loop.

Hidden states are ``[s, b, h]`` (sequence first). Attention masks are ``None`` for plain
causal attention, else a bool ``[b|1, 1, s, s]`` tensor with ``True`` = masked out.
The layer loop in ``ParallelTransformer`` is the only code that knows about random-LTD
token dropping (docs/CONTRACTS.md, "Random-LTD seam").
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from megatron.core import parallel_state, tensor_parallel
from megatron.core.tensor_parallel.layers import init_scope
from megatron.core.tensor_parallel.utils import divide
from megatron.model.config import TransformerConfig
from megatron.model.fused_layer_norm import LayerNorm
from megatron.model.rotary import apply_rotary_pos_emb


def tp_rng_fork():
    """Fork into the tensor-parallel RNG when it is seeded (single-process code may skip it)."""
    tracker = tensor_parallel.get_rng_tracker()
    return tracker.fork() if tracker.is_initialized() else contextlib.nullcontext()


class ParallelMLP(nn.Module):
    """h -> ffn (column split) -> GeLU or SwiGLU -> h (row split)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.swiglu = config.swiglu
        width = config.ffn_hidden_size * (2 if config.swiglu else 1)
        # stride 2 keeps each rank's [gate; up] halves matched under any TP layout
        self.dense_h_to_4h = tensor_parallel.ColumnParallelLinear(
            config.hidden_size, width, config=config, init_method=config.init_method,
            bias=config.add_bias_linear, stride=2 if config.swiglu else 1)
        self.dense_4h_to_h = tensor_parallel.RowParallelLinear(
            config.ffn_hidden_size, config.hidden_size, config=config,
            init_method=config.output_layer_init_method, bias=config.add_bias_linear)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """[s, b, h] -> [s, b, h]."""
        inter, _ = self.dense_h_to_4h(hidden)  # [s, b, ffn/tp] (x2 with SwiGLU)
        if self.swiglu:
            gate, up = inter.chunk(2, dim=-1)
            inter = F.silu(gate) * up
        else:
            inter = F.gelu(inter, approximate="tanh")
        out, _ = self.dense_4h_to_h(inter)
        return out


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


def build_mlp(config: TransformerConfig, layer_id: int) -> nn.Module:
    """The MLP slot of layer ``layer_id``: an MoE layer where configured, else ParallelMLP."""
    if config.moe is not None and layer_id in config.moe.moe_layer_ids:
        from megatron.model.moe.layer import MoELayer
        return MoELayer(config, config.moe, layer_id)
    return ParallelMLP(config)


class ParallelTransformerLayer(nn.Module):
    """Pre-LayerNorm block: ``x + drop(attn(ln(x)))``, then ``x + drop(mlp(ln(x)))``.

    Args:
        config: the model config.
        layer_id: global 0-based layer id (across pipeline stages).
    """

    def __init__(self, config: TransformerConfig, layer_id: int) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.hidden_dropout = config.hidden_dropout
        self.sequence_parallel = config.sequence_parallel
        eps, sp = config.layernorm_epsilon, config.sequence_parallel
        self.input_layernorm = LayerNorm(config.hidden_size, eps, sp, config.params_dtype)
        # keyed by the global layer id: the same weights whichever stage builds the layer
        with init_scope(f"layers.{layer_id}"):
            self.self_attention = ParallelAttention(config)
            self.post_attention_layernorm = LayerNorm(config.hidden_size, eps, sp,
                                                      config.params_dtype)
            self.mlp = build_mlp(config, layer_id)

    def _dropout_add(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        # Sequence-parallel ranks hold different tokens: give them different masks.
        forking = self.sequence_parallel and self.training and self.hidden_dropout > 0
        ctx = tp_rng_fork() if forking else contextlib.nullcontext()
        with ctx:
            return residual + F.dropout(x, p=self.hidden_dropout, training=self.training)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None,
                rotary_pos_emb: torch.Tensor | None = None) -> torch.Tensor:
        """[s, b, h] -> [s, b, h]."""
        attn = self.self_attention(self.input_layernorm(hidden), attention_mask, rotary_pos_emb)
        hidden = self._dropout_add(attn, hidden)
        mlp = self.mlp(self.post_attention_layernorm(hidden))
        return self._dropout_add(mlp, hidden)


def _layer_offset(num_layers: int) -> tuple[int, int]:
    """(global id of this stage's/chunk's first layer, number of layers here)."""
    pp = parallel_state.get_pipeline_model_parallel_world_size()
    pp_rank = parallel_state.get_pipeline_model_parallel_rank()
    per_stage = divide(num_layers, pp)
    vp = parallel_state.get_virtual_pipeline_model_parallel_world_size()
    if vp is None:
        return pp_rank * per_stage, per_stage
    # Interleaved schedule: chunk c of stage p holds layers (c * pp + p) * per_chunk + ...
    per_chunk = divide(per_stage, vp)
    vp_rank = parallel_state.get_virtual_pipeline_model_parallel_rank()
    return (vp_rank * pp + pp_rank) * per_chunk, per_chunk


class ParallelTransformer(nn.Module):
    """This pipeline stage's layers plus, on the last stage, the final LayerNorm."""

    def __init__(self, config: TransformerConfig, pre_process: bool = True,
                 post_process: bool = True) -> None:
        super().__init__()
        self.config = config
        self.pre_process, self.post_process = pre_process, post_process
        self.input_tensor = None
        offset, count = _layer_offset(config.num_layers)
        self.layers = nn.ModuleList(ParallelTransformerLayer(config, offset + i)
                                    for i in range(count))
        if post_process:
            self.final_layernorm = LayerNorm(config.hidden_size, config.layernorm_epsilon,
                                             config.sequence_parallel, config.params_dtype)

    def set_input_tensor(self, input_tensor: torch.Tensor | None) -> None:
        """Activation received from the previous pipeline stage ([s, b, h])."""
        self.input_tensor = input_tensor

    def _run_layers(self, start: int, end: int, hidden: torch.Tensor,
                    mask: torch.Tensor | None, rope: torch.Tensor | None,
                    plan) -> torch.Tensor:
        """The layer loop over ``self.layers[start:end]`` (the random-LTD seam)."""
        s, b = hidden.shape[0], hidden.shape[1]
        for layer in self.layers[start:end]:
            if (plan is not None and self.training and plan.drops(layer.layer_id)
                    and plan.kept_length < s):
                from megatron.data_efficiency.random_ltd.ops import (
                    combine_tokens, gather_attention_mask, gather_tokens)
                idx = plan.kept_indices(layer.layer_id, b, s, hidden.device)
                part = layer(gather_tokens(hidden, idx), gather_attention_mask(mask, idx),
                             None if rope is None else gather_tokens(rope, idx))
                hidden = combine_tokens(hidden, part, idx)
            else:
                hidden = layer(hidden, mask, rope)
        return hidden

    def _chunks(self) -> list[tuple[int, int, bool]]:
        """(start, end, recompute) spans of layers under --recompute-granularity full."""
        n, cfg = len(self.layers), self.config
        if cfg.recompute_granularity != "full" or not self.training:
            return [(0, n, False)]
        k = cfg.recompute_num_layers
        if cfg.recompute_method == "uniform":
            return [(i, min(i + k, n), True) for i in range(0, n, k)]
        # block: the first k layers of this stage are recomputed one by one
        return [(i, i + 1, i < k) for i in range(n)]

    def forward(self, hidden_states: torch.Tensor | None, attention_mask: torch.Tensor | None,
                rotary_pos_emb: torch.Tensor | None = None,
                token_drop_plan=None) -> torch.Tensor:
        """[s, b, h] (ignored after the first stage: set_input_tensor) -> [s, b, h]."""
        if not self.pre_process:
            hidden_states = self.input_tensor
        if (token_drop_plan is not None and self.config.sequence_parallel
                and parallel_state.get_tensor_model_parallel_world_size() > 1):
            raise ValueError("random-LTD token dropping is not supported with --sequence-parallel")
        hidden = hidden_states
        for start, end, recompute in self._chunks():
            if recompute:
                def run(h, m, r, start=start, end=end):
                    return self._run_layers(start, end, h, m, r, token_drop_plan)
                hidden = tensor_parallel.checkpoint(
                    run, self.config.distribute_saved_activations, hidden, attention_mask,
                    rotary_pos_emb)
            else:
                hidden = self._run_layers(start, end, hidden, attention_mask, rotary_pos_emb,
                                          token_drop_plan)
        if self.post_process:
            hidden = self.final_layernorm(hidden)
        return hidden
