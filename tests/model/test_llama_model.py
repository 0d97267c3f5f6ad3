"""The Llama shape at the model level: grouped-query attention computes what its layout
says (query head j reads group j // (n/g)), bias-free models hold no bias anywhere,
RMSNorm is Llama's formula, Llama-3 rope scaling keeps fp32 frequencies under bf16."""
from __future__ import annotations

import math

import pytest
import torch

from megatron.model import Float16Module, GPTModel, TransformerConfig
from megatron.model.attention import ParallelAttention
from megatron.model.norms import RMSNorm
from megatron.model.rotary import RotaryEmbedding
from tests.moe.helpers import moe_config

LLAMA = dict(normalization="RMSNorm", num_query_groups=2, swiglu=True, add_bias_linear=False,
             position_embedding_type="rope", rotary_base=500000.0,
             untie_embeddings_and_output_weights=True)


def _config(**kw) -> TransformerConfig:
    base = dict(num_layers=2, hidden_size=32, num_attention_heads=4, padded_vocab_size=64,
                max_position_embeddings=16, hidden_dropout=0.0, attention_dropout=0.0)
    return TransformerConfig(**{**base, **kw})


def _reference_attention(attn: ParallelAttention, x: torch.Tensor, groups: int,
                         mask: torch.Tensor | None) -> torch.Tensor:
    """Per head, from the documented row layout: group g's rows are [q_1 .. q_m k v]."""
    n, d = 4, 8
    m = n // groups
    w = attn.query_key_value.weight.view(groups, m + 2, d, -1)
    s = x.shape[0]
    causal = torch.ones(s, s, dtype=torch.bool).triu(1) if mask is None else mask[0, 0]
    heads = []
    for j in range(n):
        g = j // m
        q, k, v = (x @ w[g, i].t() for i in (j % m, m, m + 1))         # [s, b, d]
        scores = torch.einsum("sbd,tbd->bst", q, k) / math.sqrt(d)
        probs = scores.masked_fill(causal, float("-inf")).softmax(-1)
        heads.append(torch.einsum("bst,tbd->sbd", probs, v))
    return attn.dense(torch.cat(heads, dim=-1))[0]


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_grouped_query_attention_follows_its_layout(groups):
    torch.manual_seed(0)
    attn = ParallelAttention(_config(num_query_groups=groups, add_bias_linear=False))
    assert attn.query_key_value.weight.shape == ((4 + 2 * groups) * 8, 32)
    x = torch.randn(6, 2, 32)
    mask = torch.rand(1, 1, 6, 6) < 0.3
    mask[..., 0] = False
    for m in (None, mask):
        torch.testing.assert_close(attn(x, m), _reference_attention(attn, x, groups, m),
                                   rtol=1e-5, atol=1e-6)


def test_query_groups_must_divide_the_heads():
    with pytest.raises(ValueError, match="--num-query-groups 3 must be a positive divisor"):
        _config(num_query_groups=3)


def test_bias_free_model_holds_no_bias_anywhere():
    """--disable-bias-linear removes the bias of every linear (attention, MLP, MoE experts);
    with RMSNorm the model then has no bias at all (LayerNorm keeps its own)."""
    moe = moe_config(num_experts=2, layers=2, freq=2)
    for kw in (dict(LLAMA), dict(LLAMA, moe=moe), dict(add_bias_linear=False)):
        names = [n for n, _ in GPTModel(_config(**kw)).named_parameters()]
        norms = ("layernorm.bias",) if "normalization" not in kw else ()
        assert not [n for n in names if "bias" in n and not n.endswith(norms)], kw
        assert any("query_key_value" in n for n in names)
    with_bias = [n for n, _ in GPTModel(_config()).named_parameters() if n.endswith(".bias")]
    assert len(with_bias) == 2 * 6 + 1    # 4 linears + 2 norms per layer, the final norm


def test_rms_norm_is_llamas_formula():
    torch.manual_seed(0)
    norm = RMSNorm(32, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(3, 5, 32) * 4
    want = norm.weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(norm(x), want, rtol=1e-6, atol=1e-6)
    model = GPTModel(_config(**LLAMA))
    layer = model.transformer.layers[0]
    for n in (layer.input_layernorm, layer.post_attention_layernorm,
              model.transformer.final_layernorm):
        assert isinstance(n, RMSNorm)


def test_llama3_rope_scaling_and_fp32_frequencies():
    plain = RotaryEmbedding(64, 500000.0).inv_freq
    scaled = RotaryEmbedding(64, 500000.0, scaling_factor=8.0).inv_freq
    wavelen = 2 * math.pi / plain
    short, long = wavelen < 8192 / 4, wavelen > 8192
    assert short.any() and long.any() and (~short & ~long).any()
    assert torch.equal(scaled[short], plain[short])                      # kept
    torch.testing.assert_close(scaled[long], plain[long] / 8, rtol=0, atol=0)   # divided
    mid = ~short & ~long                                                  # in between
    assert ((scaled[mid] < plain[mid]) & (scaled[mid] > plain[mid] / 8)).all()
    torch.manual_seed(0)
    fp32 = GPTModel(_config(**LLAMA, rope_scaling=True, rope_scaling_factor=8.0))
    half = Float16Module(fp32, torch.bfloat16)
    rope = half.module.rotary_pos_emb
    assert rope.inv_freq.dtype == torch.float32
    torch.testing.assert_close(rope.inv_freq, RotaryEmbedding(8, 500000.0, 8.0).inv_freq,
                               rtol=0, atol=0)
    with pytest.raises(ValueError, match="--use-rope-scaling needs rotary"):
        _config(rope_scaling=True)


def test_layout_conversion_keeps_query_groups_whole():
    """model_split splits the fused q/k/v rows (and the output projection's columns)
    only over a TP that divides the query groups: 4 heads in 2 groups go to TP2, not TP4,
    although 4 heads and the (4 + 2 x 2) x 8 rows both divide by 4."""
    from megatron.checkpointing import model_split as checkpoint_layout
    model = GPTModel(_config(**LLAMA))
    specs = checkpoint_layout.param_specs(model)
    qkv = "transformer.layers.0.self_attention.query_key_value.weight"
    assert specs[qkv].partition_units == 2
    assert specs["transformer.layers.0.self_attention.dense.weight"].partition_units == 2
    full = model.state_dict()
    parts = checkpoint_layout.split_state_dict(full, specs, 2, 1, 2, tied_embeddings=False)
    assert parts[(1, 0)][qkv].shape == (32, 32)          # one group: [q q k v] x 8 rows
    torch.testing.assert_close(parts[(1, 0)][qkv], full[qkv][32:], rtol=0, atol=0)
    merged = checkpoint_layout.merge_state_dicts(parts, specs, 2)
    assert all(torch.equal(merged[k], v) for k, v in full.items())
    with pytest.raises(ValueError, match="2 query groups cannot be split over 4"):
        checkpoint_layout.split_state_dict(full, specs, 4, 1, 2, tied_embeddings=False)
