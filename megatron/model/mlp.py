"""The MLP slot's dense module: h -> ffn (column split) -> GeLU or SwiGLU -> h (row split)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from megatron.core import tensor_parallel
from megatron.model.config import TransformerConfig


class ParallelMLP(nn.Module):
    """h -> ffn (column split) -> GeLU or SwiGLU -> h (row split); biases unless
    ``config.add_bias_linear`` is off."""

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
