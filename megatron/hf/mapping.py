"""Tensor mapping between our whole-model state dict and ``transformers`` state dicts.

Driven by the layer spec (``megatron/model/layer_spec.py``): a layer is the modules of its
slots (``input_layernorm``, ``self_attention.query_key_value`` / ``.dense``,
``post_attention_layernorm``, ``mlp.dense_h_to_4h`` / ``.dense_4h_to_h``), and each
architecture below names the ``transformers`` module(s) of each of ours and how a tensor
is cut into theirs. Which tensors a module has (a weight, and a bias or not) is read from
the state dict itself, never assumed; the q/k/v parts are cut by the attention's shape
(heads, query groups, head size), not in three equal parts.

Our fused ``query_key_value`` rows are laid out per query group as ``[q_1 .. q_m k v]``
(``m = heads / groups`` query heads of ``head_dim`` rows each; with ``groups == heads``
that is GPT-NeoX's per-head ``[q k v]``). GPT-2's ``c_attn`` holds all queries, then keys,
then values (and, as a ``Conv1D``, stores weights as ``[in, out]``); Megatron-BERT and
Llama keep separate ``query``/``key``/``value`` (``q_proj``/``k_proj``/``v_proj``) linears.
Our SwiGLU ``dense_h_to_4h`` is ``[gate; up]``, Llama's ``gate_proj`` and ``up_proj``.
Our rotary embedding rotates the two halves of each head (``rotate_half``), as
``transformers`` does, so query and key rows need no permutation.

Vocabulary rows: ours are padded (``--make-vocab-size-divisible-by`` x TP); the exported
tensors keep only the first ``vocab_size`` rows, and the import returns unpadded tensors
(:func:`megatron.checkpointing.model_split.resize_vocab` pads them for a layout).
Tied output weights are not written (``transformers`` ties them from the config).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class AttentionShape:
    """How the fused query/key/value rows divide: ``heads`` query heads in ``groups``
    query groups (one key and one value head each), ``head_dim`` rows per head."""

    heads: int
    groups: int
    head_dim: int

    @classmethod
    def of(cls, model) -> "AttentionShape":
        """The shape of a ``TransformerConfig``'s attention."""
        return cls(model.num_attention_heads, model.num_query_groups, model.kv_channels)


@dataclass(frozen=True)
class Cut:
    """One of our tensors <-> its ``transformers`` part(s), in the order of their names."""

    split: Callable[[Tensor, AttentionShape], list[Tensor]]
    join: Callable[[list[Tensor], AttentionShape], Tensor]


def _qkv_parts(t: Tensor, shape: AttentionShape) -> list[Tensor]:
    """Per-group ``[q_1 .. q_m k v]`` rows -> ``[q (all heads), k (all groups), v]``."""
    per_group = shape.heads // shape.groups
    rest = t.shape[1:]
    g = t.reshape(shape.groups, per_group + 2, shape.head_dim, *rest)
    return [g[:, :per_group].reshape(-1, *rest).clone(),
            g[:, per_group].reshape(-1, *rest).clone(),
            g[:, per_group + 1].reshape(-1, *rest).clone()]


def _qkv_join(parts: list[Tensor], shape: AttentionShape) -> Tensor:
    """Inverse of :func:`_qkv_parts`."""
    q, k, v = parts
    rest = q.shape[1:]
    q = q.reshape(shape.groups, shape.heads // shape.groups, shape.head_dim, *rest)
    k, v = (x.reshape(shape.groups, 1, shape.head_dim, *rest) for x in (k, v))
    return torch.cat([q, k, v], dim=1).reshape(-1, *rest).contiguous()


WHOLE = Cut(lambda t, shape: [t.clone()], lambda parts, shape: parts[0].clone())
QKV = Cut(_qkv_parts, _qkv_join)                     # three linears
QKV_ROWS = Cut(lambda t, shape: [torch.cat(_qkv_parts(t, shape))],   # one [q; k; v] linear
               lambda parts, shape: _qkv_join(
                   list(parts[0].split([shape.heads * shape.head_dim,
                                        shape.groups * shape.head_dim,
                                        shape.groups * shape.head_dim])), shape))
GATE_UP = Cut(lambda t, shape: [x.clone() for x in t.chunk(2)],
              lambda parts, shape: torch.cat(parts))


@dataclass(frozen=True)
class Layout:
    """Where our modules live in one ``transformers`` architecture.

    Attributes:
        layer_prefix: their prefix of layer ``i`` (``{i}`` in it).
        layer: our module inside a layer -> (their module(s) inside the layer, the cut).
        top: our module outside the layers -> their module (one tensor per tensor).
        conv1d: their layers' linears store ``[in, out]`` (GPT-2's ``Conv1D``).
    """

    layer_prefix: str
    layer: dict[str, tuple[tuple[str, ...], Cut]]
    top: dict[str, str]
    conv1d: bool = False


_QKV, _DENSE = "self_attention.query_key_value", "self_attention.dense"
_FC1, _FC2 = "mlp.dense_h_to_4h", "mlp.dense_4h_to_h"
_NORM1, _NORM2 = "input_layernorm", "post_attention_layernorm"
_WORD, _FINAL, _OUT = "embedding.word_embeddings", "transformer.final_layernorm", "output_layer"

LAYOUTS: dict[str, Layout] = {
    "gpt2": Layout(
        "transformer.h.{i}.",
        {_NORM1: (("ln_1",), WHOLE), _QKV: (("attn.c_attn",), QKV_ROWS),
         _DENSE: (("attn.c_proj",), WHOLE), _NORM2: (("ln_2",), WHOLE),
         _FC1: (("mlp.c_fc",), WHOLE), _FC2: (("mlp.c_proj",), WHOLE)},
        {_WORD: "transformer.wte", "embedding.position_embeddings": "transformer.wpe",
         _FINAL: "transformer.ln_f", _OUT: "lm_head"},
        conv1d=True),
    # GPT-NeoX names its layer modules as we do, with "attention." for "self_attention."
    "gpt_neox": Layout(
        "gpt_neox.layers.{i}.",
        {m: ((m.replace("self_attention.", "attention."),), WHOLE)
         for m in (_NORM1, _QKV, _DENSE, _NORM2, _FC1, _FC2)},
        {_WORD: "gpt_neox.embed_in", _FINAL: "gpt_neox.final_layer_norm", _OUT: "lm_head"}),
    "megatron_bert": Layout(
        "bert.encoder.layer.{i}.",
        {_NORM1: (("attention.ln",), WHOLE),
         _QKV: (("attention.self.query", "attention.self.key", "attention.self.value"), QKV),
         _DENSE: (("attention.output.dense",), WHOLE), _NORM2: (("ln",), WHOLE),
         _FC1: (("intermediate.dense",), WHOLE), _FC2: (("output.dense",), WHOLE)},
        {_WORD: "bert.embeddings.word_embeddings",
         "embedding.position_embeddings": "bert.embeddings.position_embeddings",
         "embedding.tokentype_embeddings": "bert.embeddings.token_type_embeddings",
         _FINAL: "bert.encoder.ln", "lm_head.dense": "cls.predictions.transform.dense",
         "lm_head.layernorm": "cls.predictions.transform.LayerNorm",
         "lm_head": "cls.predictions", "pooler": "bert.pooler.dense",
         "binary_head": "cls.seq_relationship"}),
    "llama": Layout(
        "model.layers.{i}.",
        {_NORM1: (("input_layernorm",), WHOLE),
         _QKV: (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), QKV),
         _DENSE: (("self_attn.o_proj",), WHOLE), _NORM2: (("post_attention_layernorm",), WHOLE),
         _FC1: (("mlp.gate_proj", "mlp.up_proj"), GATE_UP), _FC2: (("mlp.down_proj",), WHOLE)},
        {_WORD: "model.embed_tokens", _FINAL: "model.norm", _OUT: "lm_head"}),
}
ARCHITECTURES = tuple(LAYOUTS)

# Tensors of a transformers checkpoint that carry no weights of ours (buffers, tied copies).
_IGNORED_HF_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".attention.bias",
                        ".attention.masked_bias", "embeddings.position_ids",
                        "cls.predictions.decoder.weight", "cls.predictions.decoder.bias",
                        "rotary_emb.inv_freq")
_VOCAB_ROWS = {f"{_WORD}.weight", f"{_OUT}.weight", "lm_head.bias"}
_OUR_LAYER = "transformer.layers."
_PARAMS = ("weight", "bias")


def _transpose(t: Tensor, conv1d: bool) -> Tensor:
    return t.t().contiguous() if conv1d and t.dim() == 2 else t


def _their_names(name: str, layout: Layout) -> tuple[tuple[str, ...], Cut, bool]:
    """(their tensor name(s), the cut, whether they are Conv1D) of our tensor ``name``."""
    module, param = name.rsplit(".", 1)
    if name.startswith(_OUR_LAYER):
        i, inner = module[len(_OUR_LAYER):].split(".", 1)
        if inner in layout.layer:
            theirs, cut = layout.layer[inner]
            prefix = layout.layer_prefix.format(i=i)
            return tuple(f"{prefix}{t}.{param}" for t in theirs), cut, layout.conv1d
    elif module in layout.top:
        return (f"{layout.top[module]}.{param}",), WHOLE, False
    raise ValueError(f"our tensor {name!r} has no counterpart in transformers' "
                     f"{layout.layer_prefix.split('.')[0]} architecture")


def to_hf(full: dict[str, Tensor], arch: str, shape: AttentionShape,
          vocab_size: int) -> dict[str, Tensor]:
    """Our whole-model (TP1/PP1) state dict -> the ``transformers`` state dict of ``arch``.

    Args:
        full: merged state dict (padded vocabulary rows allowed).
        arch: one of :data:`ARCHITECTURES`.
        shape: the attention's heads, query groups and head size.
        vocab_size: the real vocabulary size; rows past it are dropped.

    Raises:
        ValueError: a tensor of ours has no place in ``arch``.
    """
    layout, out = LAYOUTS[arch], {}
    for name, tensor in full.items():
        theirs, cut, conv1d = _their_names(name, layout)
        if name in _VOCAB_ROWS:
            tensor = tensor[:vocab_size]
        for their, part in zip(theirs, cut.split(tensor, shape)):
            out[their] = _transpose(part, conv1d).clone()
    return out


def from_hf(hf: dict[str, Tensor], arch: str, shape: AttentionShape, num_layers: int,
            tied: bool) -> dict[str, Tensor]:
    """Inverse of :func:`to_hf` (unpadded vocabulary rows): every tensor ``hf`` holds for a
    module of ours (a bias only where they have one; every layer module has a weight).

    With ``tied`` output weights a stored ``lm_head.weight`` (a copy) is ignored.

    Raises:
        ValueError: a tensor of ``hf`` has no place in our model (an unsupported variant),
            or a module has only some of its parts; the message names them.
    """
    layout = LAYOUTS[arch]
    modules = {ours: ((theirs,), WHOLE, False) for ours, theirs in layout.top.items()
               if not (tied and ours == _OUT)}
    for i in range(num_layers):
        prefix = layout.layer_prefix.format(i=i)
        modules.update({f"{_OUR_LAYER}{i}.{ours}": (tuple(prefix + t for t in theirs), cut,
                                                    layout.conv1d)
                        for ours, (theirs, cut) in layout.layer.items()})
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    for ours, (theirs, cut, conv1d) in modules.items():
        for param in _PARAMS:
            names = [f"{t}.{param}" for t in theirs]
            present = [n for n in names if n in hf]
            if not present and param == "weight" and ours.startswith(_OUR_LAYER):
                raise ValueError(f"the transformers checkpoint has no tensor {names[0]!r}")
            if not present:
                continue
            if len(present) < len(names):
                raise ValueError(f"the transformers checkpoint has {present} but not "
                                 f"{sorted(set(names) - set(present))}")
            used.update(names)
            out[f"{ours}.{param}"] = cut.join([_transpose(hf[n], conv1d) for n in names], shape)
    ignored = _IGNORED_HF_SUFFIXES + (("lm_head.weight",) if tied else ())
    left = sorted(k for k in hf if k not in used and not k.endswith(ignored))
    if left:
        raise ValueError(f"tensors with no counterpart in our {arch} model (unsupported "
                         f"variant?): {left[:8]}{' ...' if len(left) > 8 else ''}")
    return out
