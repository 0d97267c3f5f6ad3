"""Layers from a spec (megatron/model/layer_spec.py): a new norm is one class and one entry
in ``norms.NORMS``, and every norm of the model follows it; the MLP slot holds the MoE
layer exactly where the config lists one; megatron/model has no import cycle, lazy
(function-level) imports included."""
from __future__ import annotations

import ast
import os

import pytest
import torch
from torch import nn

from megatron.model import BertModel, GPTModel, TransformerConfig
from megatron.model import norms
from megatron.model.attention import ParallelAttention
from megatron.model.layer_spec import layer_spec
from megatron.model.mlp import ParallelMLP
from megatron.model.moe.layer import MoELayer
from tests.moe.helpers import model_config, moe_config


class ScaleNorm(nn.Module):
    """A norm the project does not have: ``g * x / ||x||`` (one scalar weight)."""

    def __init__(self, hidden_size, eps=1e-5, sequence_parallel=False, dtype=torch.float32):
        super().__init__()
        self.scale = nn.Parameter(torch.ones((), dtype=dtype))
        self.scale.sequence_parallel = sequence_parallel

    def forward(self, x):
        return self.scale * x / x.float().norm(dim=-1, keepdim=True).clamp_min(1e-5).to(x.dtype)


def _config(**kw) -> TransformerConfig:
    return TransformerConfig(num_layers=2, hidden_size=16, num_attention_heads=2,
                             padded_vocab_size=32, max_position_embeddings=8, **kw)


def test_a_new_norm_is_one_class_and_one_entry(monkeypatch):
    with pytest.raises(ValueError, match="--normalization must be one of"):
        _config(normalization="ScaleNorm")
    monkeypatch.setitem(norms.NORMS, "ScaleNorm", ScaleNorm)
    gpt = GPTModel(_config(normalization="ScaleNorm"))
    layer = gpt.transformer.layers[0]
    for norm in (layer.input_layernorm, layer.post_attention_layernorm,
                 gpt.transformer.final_layernorm):
        assert isinstance(norm, ScaleNorm)
    assert "transformer.layers.1.input_layernorm.scale" in gpt.state_dict()
    bert = BertModel(_config(normalization="ScaleNorm"), num_tokentypes=0, add_binary_head=False)
    assert isinstance(bert.lm_head.layernorm, ScaleNorm)
    loss = gpt(torch.randint(0, 32, (2, 8)), torch.arange(8).expand(2, 8), None,
               labels=torch.randint(0, 32, (2, 8)))
    loss.sum().backward()
    assert layer.input_layernorm.scale.grad is not None


def test_the_mlp_slot_holds_moe_only_in_the_listed_layers():
    config = model_config(moe_config(num_experts=2, layers=4, freq=2))   # MoE layers 0, 2
    for layer_id in range(4):
        spec = layer_spec(config, layer_id)
        assert spec.attention is ParallelAttention
        assert spec.input_norm is spec.post_attention_norm is norms.NORMS["LayerNorm"]
        mlp = spec.mlp(config)
        assert isinstance(mlp, MoELayer if layer_id % 2 == 0 else ParallelMLP)
        if layer_id % 2 == 0:
            assert mlp.layer_id == layer_id


def _imports(path: str, package_root: str) -> set[str]:
    """Every ``megatron.*`` module ``path`` imports, at any depth of the file."""
    tree = ast.parse(open(path).read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith(package_root)}


def test_model_package_has_no_import_cycle_lazy_imports_included():
    root = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "megatron", "model")
    modules = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py") and name != "__init__.py":
                rel = os.path.relpath(os.path.join(folder, name), os.path.dirname(root))
                modules["megatron." + rel[:-3].replace(os.sep, ".")] = os.path.join(folder, name)
    graph = {m: {i for i in _imports(p, "megatron.model") if i in modules}
             for m, p in modules.items()}

    def cycle_from(start, node, seen):
        for nxt in graph[node]:
            if nxt == start:
                return [node, nxt]
            if nxt not in seen:
                seen.add(nxt)
                found = cycle_from(start, nxt, seen)
                if found:
                    return [node] + found
        return None

    for module in graph:
        assert cycle_from(module, module, set()) is None, cycle_from(module, module, set())
