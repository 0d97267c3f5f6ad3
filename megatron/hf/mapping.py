"""Tensor mapping between our whole-model state dict and ``transformers`` state dicts.

Our fused ``query_key_value`` is laid out per head as ``[q_h k_h v_h]`` (rows
``n * 3d + j * d + i``): GPT-NeoX uses the same layout, GPT-2's ``c_attn`` groups all
queries, then keys, then values (and, as a ``Conv1D``, stores weights as ``[in, out]``),
Megatron-BERT keeps three separate ``query``/``key``/``value`` linears.

Vocabulary rows: ours are padded (``--make-vocab-size-divisible-by`` x TP); the exported
tensors keep only the first ``vocab_size`` rows, and the import returns unpadded tensors
(:func:`megatron.core.distributed.checkpoint_layout.resize_vocab` pads them for a layout).
Tied output weights are not written (``transformers`` ties them from the config).
"""
from __future__ import annotations

from typing import Callable

import torch

Tensor = torch.Tensor
ARCHITECTURES = ("gpt2", "gpt_neox", "megatron_bert")

# Tensors of a transformers checkpoint that carry no weights of ours (buffers, tied copies).
_IGNORED_HF_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".attention.bias",
                        ".attention.masked_bias", "embeddings.position_ids",
                        "cls.predictions.decoder.weight", "cls.predictions.decoder.bias",
                        "rotary_emb.inv_freq")


def _grouped_qkv(w: Tensor, heads: int) -> Tensor:
    """Per-head ``[q_h k_h v_h]`` rows -> ``[q (all heads); k; v]`` rows."""
    rest = w.shape[1:]
    return w.reshape(heads, 3, -1, *rest).transpose(0, 1).reshape(w.shape).contiguous()


def _per_head_qkv(w: Tensor, heads: int) -> Tensor:
    """Inverse of :func:`_grouped_qkv`."""
    rest = w.shape[1:]
    return w.reshape(3, heads, -1, *rest).transpose(0, 1).reshape(w.shape).contiguous()


def _same(t: Tensor, heads: int) -> Tensor:
    return t.clone()


def _t(t: Tensor, heads: int) -> Tensor:
    return t.t().contiguous()


def _grouped_qkv_t(t: Tensor, heads: int) -> Tensor:
    return _grouped_qkv(t, heads).t().contiguous()


def _t_per_head_qkv(t: Tensor, heads: int) -> Tensor:
    return _per_head_qkv(t.t().contiguous(), heads)


# (our name inside layer i, transformers name inside layer i, ours -> hf, hf -> ours)
_Rule = tuple[str, str, Callable[[Tensor, int], Tensor], Callable[[Tensor, int], Tensor]]
_A, _M = "self_attention.", "mlp."
_GPT2_LAYER: list[_Rule] = [
    ("input_layernorm.weight", "ln_1.weight", _same, _same),
    ("input_layernorm.bias", "ln_1.bias", _same, _same),
    (_A + "query_key_value.weight", "attn.c_attn.weight", _grouped_qkv_t, _t_per_head_qkv),
    (_A + "query_key_value.bias", "attn.c_attn.bias", _grouped_qkv, _per_head_qkv),
    (_A + "dense.weight", "attn.c_proj.weight", _t, _t),
    (_A + "dense.bias", "attn.c_proj.bias", _same, _same),
    ("post_attention_layernorm.weight", "ln_2.weight", _same, _same),
    ("post_attention_layernorm.bias", "ln_2.bias", _same, _same),
    (_M + "dense_h_to_4h.weight", "mlp.c_fc.weight", _t, _t),
    (_M + "dense_h_to_4h.bias", "mlp.c_fc.bias", _same, _same),
    (_M + "dense_4h_to_h.weight", "mlp.c_proj.weight", _t, _t),
    (_M + "dense_4h_to_h.bias", "mlp.c_proj.bias", _same, _same),
]
# GPT-NeoX names its layer tensors as we do, with "attention." for "self_attention."
_NEOX_LAYER: list[_Rule] = [(ours, ours.replace(_A, "attention."), _same, _same)
                            for ours, _, _, _ in _GPT2_LAYER]
_BERT_LAYER: list[_Rule] = [
    ("input_layernorm.weight", "attention.ln.weight", _same, _same),
    ("input_layernorm.bias", "attention.ln.bias", _same, _same),
    (_A + "dense.weight", "attention.output.dense.weight", _same, _same),
    (_A + "dense.bias", "attention.output.dense.bias", _same, _same),
    ("post_attention_layernorm.weight", "ln.weight", _same, _same),
    ("post_attention_layernorm.bias", "ln.bias", _same, _same),
    (_M + "dense_h_to_4h.weight", "intermediate.dense.weight", _same, _same),
    (_M + "dense_h_to_4h.bias", "intermediate.dense.bias", _same, _same),
    (_M + "dense_4h_to_h.weight", "output.dense.weight", _same, _same),
    (_M + "dense_4h_to_h.bias", "output.dense.bias", _same, _same),
]
_BERT_QKV = ("attention.self.query", "attention.self.key", "attention.self.value")

_WORD = "embedding.word_embeddings.weight"
_TOP: dict[str, list[tuple[str, str]]] = {   # (ours, transformers); vocab rows marked below
    "gpt2": [(_WORD, "transformer.wte.weight"),
             ("embedding.position_embeddings.weight", "transformer.wpe.weight"),
             ("transformer.final_layernorm.weight", "transformer.ln_f.weight"),
             ("transformer.final_layernorm.bias", "transformer.ln_f.bias"),
             ("output_layer.weight", "lm_head.weight")],
    "gpt_neox": [(_WORD, "gpt_neox.embed_in.weight"),
                 ("transformer.final_layernorm.weight", "gpt_neox.final_layer_norm.weight"),
                 ("transformer.final_layernorm.bias", "gpt_neox.final_layer_norm.bias"),
                 ("output_layer.weight", "lm_head.weight")],
    "megatron_bert": [
        (_WORD, "bert.embeddings.word_embeddings.weight"),
        ("embedding.position_embeddings.weight", "bert.embeddings.position_embeddings.weight"),
        ("embedding.tokentype_embeddings.weight", "bert.embeddings.token_type_embeddings.weight"),
        ("transformer.final_layernorm.weight", "bert.encoder.ln.weight"),
        ("transformer.final_layernorm.bias", "bert.encoder.ln.bias"),
        ("lm_head.dense.weight", "cls.predictions.transform.dense.weight"),
        ("lm_head.dense.bias", "cls.predictions.transform.dense.bias"),
        ("lm_head.layernorm.weight", "cls.predictions.transform.LayerNorm.weight"),
        ("lm_head.layernorm.bias", "cls.predictions.transform.LayerNorm.bias"),
        ("lm_head.bias", "cls.predictions.bias"),
        ("pooler.weight", "bert.pooler.dense.weight"),
        ("pooler.bias", "bert.pooler.dense.bias"),
        ("binary_head.weight", "cls.seq_relationship.weight"),
        ("binary_head.bias", "cls.seq_relationship.bias")],
}
_VOCAB_ROWS = {_WORD, "output_layer.weight", "lm_head.bias"}
_LAYER_PREFIX = {"gpt2": ("transformer.h.", _GPT2_LAYER),
                 "gpt_neox": ("gpt_neox.layers.", _NEOX_LAYER),
                 "megatron_bert": ("bert.encoder.layer.", _BERT_LAYER)}
_OUR_LAYER = "transformer.layers."


def to_hf(full: dict[str, Tensor], arch: str, num_layers: int, heads: int,
          vocab_size: int) -> dict[str, Tensor]:
    """Our whole-model (TP1/PP1) state dict -> the ``transformers`` state dict of ``arch``.

    Args:
        full: merged state dict (padded vocabulary rows allowed).
        arch: one of :data:`ARCHITECTURES`.
        num_layers, heads: the model's layer and attention-head counts.
        vocab_size: the real vocabulary size; rows past it are dropped.
    """
    out: dict[str, Tensor] = {}
    for ours, theirs in _TOP[arch]:
        if ours in full:
            t = full[ours]
            out[theirs] = (t[:vocab_size] if ours in _VOCAB_ROWS else t).clone()
    prefix, rules = _LAYER_PREFIX[arch]
    for i in range(num_layers):
        src = f"{_OUR_LAYER}{i}."
        for ours, theirs, forward, _ in rules:
            out[f"{prefix}{i}.{theirs}"] = forward(full[src + ours], heads)
        if arch == "megatron_bert":
            for suffix in ("weight", "bias"):
                qkv = _grouped_qkv(full[f"{src}{_A}query_key_value.{suffix}"], heads)
                for name, part in zip(_BERT_QKV, qkv.chunk(3, dim=0)):
                    out[f"{prefix}{i}.{name}.{suffix}"] = part.clone()
    return out


def from_hf(hf: dict[str, Tensor], arch: str, num_layers: int, heads: int,
            tied: bool) -> dict[str, Tensor]:
    """Inverse of :func:`to_hf` (unpadded vocabulary rows).

    With ``tied`` output weights a stored ``lm_head.weight`` (a copy) is ignored.

    Raises:
        ValueError: a tensor of ``hf`` has no place in our model (an unsupported variant),
            or one we need is missing; the message names them.
    """
    out: dict[str, Tensor] = {}
    used: set[str] = set()

    def take(name: str) -> Tensor:
        if name not in hf:
            raise ValueError(f"the transformers checkpoint has no tensor {name!r}")
        used.add(name)
        return hf[name]

    for ours, theirs in _TOP[arch]:
        if theirs in hf and not (tied and ours == "output_layer.weight"):
            out[ours] = take(theirs).clone()
    prefix, rules = _LAYER_PREFIX[arch]
    for i in range(num_layers):
        dst, src = f"{_OUR_LAYER}{i}.", f"{prefix}{i}."
        for ours, theirs, _, backward in rules:
            out[dst + ours] = backward(take(src + theirs), heads)
        if arch == "megatron_bert":
            for suffix in ("weight", "bias"):
                qkv = torch.cat([take(f"{src}{name}.{suffix}") for name in _BERT_QKV])
                out[f"{dst}{_A}query_key_value.{suffix}"] = _per_head_qkv(qkv, heads)
    ignored = _IGNORED_HF_SUFFIXES + (("lm_head.weight",) if tied else ())
    left = sorted(k for k in hf if k not in used and not k.endswith(ignored))
    if left:
        raise ValueError(f"tensors with no counterpart in our {arch} model (unsupported "
                         f"variant?): {left[:8]}{' ...' if len(left) > 8 else ''}")
    return out
