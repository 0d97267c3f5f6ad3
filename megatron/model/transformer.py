"""The transformer: a layer assembled from its spec, and the layer loop.

Hidden states are ``[s, b, h]`` (sequence first). Attention masks are ``None`` for plain
causal attention, else a bool ``[b|1, 1, s, s]`` tensor with ``True`` = masked out.
What fills each slot of a layer (norms, attention, MLP or MoE) is ``layer_spec``'s
choice from the config. The layer loop in ``ParallelTransformer`` is the only code that
knows about random-LTD token dropping (docs/CONTRACTS.md, "Random-LTD seam").
"""
from __future__ import annotations

import torch
from torch import nn

from megatron.core import parallel_state, tensor_parallel
from megatron.core.tensor_parallel.layers import init_scope
from megatron.core.tensor_parallel.utils import divide
from megatron.data_efficiency.random_ltd.ops import (combine_tokens, gather_attention_mask,
                                                      gather_tokens)
from megatron.model.config import TransformerConfig
from megatron.model.dropout import dropout_add
from megatron.model.layer_spec import LayerSpec, layer_spec
from megatron.model.norms import build_norm


class ParallelTransformerLayer(nn.Module):
    """Pre-norm block: ``x + drop(attn(norm(x)))``, then ``x + drop(mlp(norm(x)))``.

    Args:
        config: the model config.
        layer_id: global 0-based layer id (across pipeline stages).
        spec: the slots' modules; default ``layer_spec(config, layer_id)``.
    """

    def __init__(self, config: TransformerConfig, layer_id: int,
                 spec: LayerSpec | None = None) -> None:
        super().__init__()
        spec = spec or layer_spec(config, layer_id)
        self.layer_id = layer_id
        self.hidden_dropout = config.hidden_dropout
        self.sequence_parallel = config.sequence_parallel
        norm = (config.hidden_size, config.layernorm_epsilon, config.sequence_parallel,
                config.params_dtype)
        self.input_layernorm = spec.input_norm(*norm)
        # keyed by the global layer id: the same weights whichever stage builds the layer
        with init_scope(f"layers.{layer_id}"):
            self.self_attention = spec.attention(config)
            self.post_attention_layernorm = spec.post_attention_norm(*norm)
            self.mlp = spec.mlp(config)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None,
                rotary_pos_emb: torch.Tensor | None = None) -> torch.Tensor:
        """[s, b, h] -> [s, b, h]."""
        attn = self.self_attention(self.input_layernorm(hidden), attention_mask, rotary_pos_emb)
        hidden = self._dropout_add(attn, hidden)
        mlp = self.mlp(self.post_attention_layernorm(hidden))
        return self._dropout_add(mlp, hidden)

    def _dropout_add(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return dropout_add(x, residual, self.hidden_dropout, self.training,
                           self.sequence_parallel)


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
    """This pipeline stage's layers plus, on the last stage, the final norm."""

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
            self.final_layernorm = build_norm(config)

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
