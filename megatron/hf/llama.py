"""Our Llama-shaped GPT <-> ``transformers``' ``LlamaForCausalLM``, the config both ways.

Our model is Llama exactly when its layer spec has RMSNorm, rotary positions over whole
heads and a SwiGLU MLP: ``LlamaForCausalLM`` has the same pre-norm layer, ``silu(gate) *
up``, separate q/k/v projections with ``num_key_value_heads`` = our query groups and
``head_dim`` = our ``kv_channels``, softmax scaled by ``1/sqrt(head_dim)``, and rotary on
the two halves of each head (``rotate_half``, as ours: no row permutation) with
``inv_freq = base^(-2i/d)``, Llama-3 scaled (``rope_type: llama3``) or not. Biases: its
``attention_bias`` / ``mlp_bias`` are our one ``add_bias_linear`` (both or neither).
Llama has no hidden dropout.
"""
from __future__ import annotations

from megatron.model.config import TransformerConfig
from megatron.model.rotary import (LLAMA3_HIGH_FREQ_FACTOR, LLAMA3_LOW_FREQ_FACTOR,
                                   LLAMA3_ORIGINAL_POSITIONS)

_LLAMA3 = {"low_freq_factor": LLAMA3_LOW_FREQ_FACTOR,
           "high_freq_factor": LLAMA3_HIGH_FREQ_FACTOR,
           "original_max_position_embeddings": LLAMA3_ORIGINAL_POSITIONS}


def export_problems(model: TransformerConfig) -> list[str]:
    """What of our RMSNorm / rotary model ``LlamaForCausalLM`` cannot hold."""
    problems = []
    if not model.swiglu:
        problems.append("a GeLU MLP (Llama's MLP is SwiGLU: --swiglu)")
    if float(model.rotary_percent) != 1.0:
        problems.append(f"--rotary-percent {model.rotary_percent} (Llama rotates whole heads)")
    return problems


def llama_config(model: TransformerConfig, vocab_size: int, common: dict):
    """The ``LlamaConfig`` of our model (``common``: vocabulary, positions, tying, init,
    the tokenizer's special ids)."""
    import transformers
    rope = {"rope_type": "default", "rope_theta": float(model.rotary_base)}
    if model.rope_scaling:
        rope.update(rope_type="llama3", factor=float(model.rope_scaling_factor), **_LLAMA3)
    return transformers.LlamaConfig(
        hidden_size=model.hidden_size, num_hidden_layers=model.num_layers,
        num_attention_heads=model.num_attention_heads,
        num_key_value_heads=model.num_query_groups, head_dim=model.kv_channels,
        intermediate_size=model.ffn_hidden_size, hidden_act="silu",
        rms_norm_eps=float(model.layernorm_epsilon), rope_parameters=rope,
        attention_bias=model.add_bias_linear, mlp_bias=model.add_bias_linear,
        attention_dropout=float(model.attention_dropout), **common)


def import_problems(config) -> list[str]:
    """What of a ``LlamaConfig`` our model (and its flags) cannot reproduce."""
    problems = []
    if config.hidden_act != "silu":
        problems.append(f"hidden_act {config.hidden_act!r} (ours: silu, --swiglu)")
    if bool(config.attention_bias) != bool(config.mlp_bias):
        problems.append(f"attention_bias={config.attention_bias} with mlp_bias="
                        f"{config.mlp_bias} (one --disable-bias-linear for both)")
    rope = dict(config.rope_parameters or {})
    kind = rope.get("rope_type", "default")
    if kind not in ("default", "llama3"):
        problems.append(f"rope_type {kind!r} (ours: default, or llama3 with "
                        "--use-rope-scaling)")
    if kind == "llama3":
        other = {k: rope.get(k) for k, v in _LLAMA3.items() if float(rope.get(k, v)) != v}
        if other:
            problems.append(f"llama3 rope scaling with {other} (ours fixes {_LLAMA3}; "
                            "only --rope-scaling-factor is a flag)")
    if float(rope.get("partial_rotary_factor", 1.0)) != 1.0:
        problems.append(f"partial_rotary_factor {rope['partial_rotary_factor']}")
    return problems


def flags_from_llama(config) -> dict:
    """Our model flags for a ``LlamaConfig`` (checked by :func:`import_problems`)."""
    rope = dict(config.rope_parameters or {})
    heads, groups = config.num_attention_heads, config.num_key_value_heads or \
        config.num_attention_heads
    scaled = rope.get("rope_type") == "llama3"
    return dict(
        num_layers=config.num_hidden_layers, hidden_size=config.hidden_size,
        num_attention_heads=heads, ffn_hidden_size=config.intermediate_size,
        kv_channels=config.head_dim or config.hidden_size // heads,
        max_position_embeddings=config.max_position_embeddings,
        layernorm_epsilon=float(config.rms_norm_eps), normalization="RMSNorm",
        hidden_dropout=0.0, attention_dropout=float(config.attention_dropout or 0.0),
        init_method_std=float(config.initializer_range),
        untie_embeddings_and_output_weights=not config.tie_word_embeddings,
        position_embedding_type="rope", add_position_embedding=False,
        rotary_base=float(rope.get("rope_theta", 10000.0)), swiglu=True,
        add_bias_linear=bool(config.attention_bias),
        group_query_attention=groups != heads,
        num_query_groups=groups if groups != heads else None,
        use_rope_scaling=scaled,
        rope_scaling_factor=float(rope["factor"]) if scaled else None)
