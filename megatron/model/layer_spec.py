"""What fills each slot of a transformer layer, chosen from the config.

A layer is ``x + attention(input_norm(x))``, then ``x + mlp(post_attention_norm(x))``
(``transformer.ParallelTransformerLayer``). Its spec names the module of each slot:

* norms: a class of ``norms.NORMS`` (``config.normalization``);
* attention: a builder ``(config) -> module`` mapping ``[s, b, h]`` (with the mask and
  the rotary angles) to ``[s, b, h]``;
* mlp: a builder ``(config) -> module`` mapping ``[s, b, h] -> [s, b, h]``: the dense MLP,
  or an MoE layer for the layers listed in ``config.moe``.

A new variant is one class and one line here (or one entry in ``NORMS``). The module
attribute names of the layer (``input_layernorm``, ``self_attention``,
``post_attention_layernorm``, ``mlp``) are the checkpoint's key names and do not change
with the spec; the Hugging Face mapping (``megatron/hf``) reads the same slots.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from torch import nn

from megatron.model.attention import ParallelAttention
from megatron.model.config import TransformerConfig
from megatron.model.mlp import ParallelMLP
from megatron.model.moe.layer import MoELayer
from megatron.model.norms import NORMS, NormClass

Builder = Callable[[TransformerConfig], nn.Module]


@dataclass(frozen=True)
class LayerSpec:
    """The modules of one transformer layer, slot by slot."""

    input_norm: NormClass
    attention: Builder
    post_attention_norm: NormClass
    mlp: Builder


def layer_spec(config: TransformerConfig, layer_id: int) -> LayerSpec:
    """The spec of global layer ``layer_id`` (0-based across pipeline stages)."""
    norm = NORMS[config.normalization]
    if config.moe is not None and layer_id in config.moe.moe_layer_ids:
        mlp: Builder = partial(MoELayer, moe=config.moe, layer_id=layer_id)
    else:
        mlp = ParallelMLP
    return LayerSpec(input_norm=norm, attention=ParallelAttention, post_attention_norm=norm,
                     mlp=mlp)
