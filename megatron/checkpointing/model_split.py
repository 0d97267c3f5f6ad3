"""Split a whole-model state dict into a (TP, PP) layout, and merge it back.

A model under tensor parallelism ``TP`` and pipeline parallelism ``PP`` is stored as one
state dict per (tp_rank, pp_rank). Two facts let us move between layouts:

* Tensor parallel: a weight marked ``tensor_model_parallel`` is split along
  ``partition_dim`` into ``TP * stride`` equal pieces, rank ``r`` holding pieces
  ``r, r + TP, ...`` (``partition_stride`` > 1 interleaves); every other tensor is
  replicated. A weight made of blocks a rank must hold whole (``partition_units``: the
  attention's query groups, ``[q_1 .. q_m k v]`` rows each) splits only over a ``TP``
  that divides the blocks. The marks come from a template model (see :func:`param_specs`).
* Pipeline parallel: stage ``p`` holds transformer layers ``p * L/PP .. (p+1) * L/PP - 1``
  renumbered from 0, the first stage also holds ``embedding.*``, the last stage everything
  else (final layer norm, output layer, heads). With tied embeddings and PP > 1 the last
  stage keeps its own copy of the word embedding as ``word_embeddings.weight``.

Used by the layout converter (``whole_model.py``, ``convert.py``) and by the parallel tests
(to load the single-process reference weights into a partitioned model).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

_LAYER_KEY = re.compile(r"^(.*?\blayers\.)(\d+)(\..*)$")
TIED_COPY_KEY = "word_embeddings.weight"          # the last stage's copy (PP > 1, tied)
WORD_EMBEDDING_KEY = "embedding.word_embeddings.weight"


@dataclass(frozen=True)
class ParamSpec:
    """How one tensor is split across tensor-parallel ranks."""

    tensor_model_parallel: bool = False
    partition_dim: int = -1
    partition_stride: int = 1
    partition_units: int = 0     # whole blocks along partition_dim (query groups); 0: any


def param_specs(model: nn.Module) -> dict[str, ParamSpec]:
    """The split of every parameter of ``model`` (any layout), by state-dict name."""
    specs = {}
    for name, param in model.named_parameters():
        specs[name] = ParamSpec(bool(getattr(param, "tensor_model_parallel", False)),
                                int(getattr(param, "partition_dim", -1)),
                                int(getattr(param, "partition_stride", 1)),
                                int(getattr(param, "partition_units", 0)))
    return specs


def _spec_for(name: str, specs: dict[str, ParamSpec]) -> ParamSpec:
    """Specs are looked up by the whole-model name; the tied copy splits like the original."""
    if name == TIED_COPY_KEY:
        name = WORD_EMBEDDING_KEY
    return specs.get(name, ParamSpec())


def split_tensor(full: torch.Tensor, spec: ParamSpec, tp: int, rank: int) -> torch.Tensor:
    """Tensor-parallel rank ``rank``'s part of ``full``."""
    if not spec.tensor_model_parallel or tp == 1:
        return full.clone()
    size = full.shape[spec.partition_dim]
    if spec.partition_units and spec.partition_units % (tp * spec.partition_stride) != 0:
        raise ValueError(f"{spec.partition_units} query groups cannot be split over {tp} "
                         "tensor-parallel ranks (each rank holds whole groups)")
    if size % (tp * spec.partition_stride) != 0:
        raise ValueError(f"dimension {spec.partition_dim} of size {size} cannot be split into "
                         f"{tp} x stride {spec.partition_stride} pieces")
    pieces = torch.split(full, size // (tp * spec.partition_stride), dim=spec.partition_dim)
    return torch.cat(pieces[rank::tp], dim=spec.partition_dim).clone()


def merge_tensors(shards: list[torch.Tensor], spec: ParamSpec) -> torch.Tensor:
    """Inverse of :func:`split_tensor` over all ranks ``shards[0..TP-1]``."""
    if not spec.tensor_model_parallel or len(shards) == 1:
        return shards[0].clone()
    stride, tp = spec.partition_stride, len(shards)
    per_rank = [torch.chunk(s, stride, dim=spec.partition_dim) for s in shards]
    # piece i of the whole tensor lives on rank i % tp as that rank's piece i // tp
    ordered = [per_rank[i % tp][i // tp] for i in range(tp * stride)]
    return torch.cat(ordered, dim=spec.partition_dim)


def _stage_of(name: str, num_layers: int, pp: int) -> tuple[int | None, str]:
    """(stage, stage-local name) of a whole-model key; stage None means "first and last"."""
    per_stage = num_layers // pp
    match = _LAYER_KEY.match(name)
    if match:
        layer = int(match.group(2))
        return layer // per_stage, f"{match.group(1)}{layer % per_stage}{match.group(3)}"
    if name.startswith("embedding."):
        return 0, name
    return pp - 1, name


def split_state_dict(full: dict[str, torch.Tensor], specs: dict[str, ParamSpec], tp: int,
                     pp: int, num_layers: int, tied_embeddings: bool
                     ) -> dict[tuple[int, int], dict[str, torch.Tensor]]:
    """Whole-model state dict -> ``{(tp_rank, pp_rank): state dict}``.

    Args:
        full: the single-process model's state dict.
        specs: :func:`param_specs` of a model of the same architecture.
        tp, pp: the target layout.
        num_layers: transformer layers of the whole model (divisible by ``pp``).
        tied_embeddings: input and output embedding are one weight (no ``output_layer``).
    """
    if num_layers % pp != 0:
        raise ValueError(f"--num-layers {num_layers} is not divisible by pipeline size {pp}")
    parts: dict[tuple[int, int], dict[str, torch.Tensor]] = {
        (t, p): {} for t in range(tp) for p in range(pp)}
    for name, tensor in full.items():
        stage, local = _stage_of(name, num_layers, pp)
        targets = [stage]
        if name == WORD_EMBEDDING_KEY and tied_embeddings and pp > 1:
            targets.append(pp - 1)  # the last stage's copy for the output layer
        for p in targets:
            key = TIED_COPY_KEY if p != stage else local
            for t in range(tp):
                parts[(t, p)][key] = split_tensor(tensor, _spec_for(name, specs), tp, t)
    return parts


def merge_state_dicts(parts: dict[tuple[int, int], dict[str, torch.Tensor]],
                      specs: dict[str, ParamSpec], num_layers: int) -> dict[str, torch.Tensor]:
    """``{(tp_rank, pp_rank): state dict}`` -> whole-model state dict.

    The last stage's tied copy of the word embedding is dropped (finalize_model_grads keeps
    it equal to the first stage's weight, which is kept).
    """
    tp = 1 + max(t for t, _ in parts)
    pp = 1 + max(p for _, p in parts)
    if set(parts) != {(t, p) for t in range(tp) for p in range(pp)}:
        raise ValueError(f"incomplete layout: expected every (tp, pp) rank of {tp} x {pp}, "
                         f"got {sorted(parts)}")
    per_stage = num_layers // pp
    full: dict[str, torch.Tensor] = {}
    for p in range(pp):
        for local in parts[(0, p)]:
            if local == TIED_COPY_KEY and pp > 1:
                continue
            match = _LAYER_KEY.match(local)
            name = local if not match else \
                f"{match.group(1)}{p * per_stage + int(match.group(2))}{match.group(3)}"
            shards = [parts[(t, p)][local] for t in range(tp)]
            full[name] = merge_tensors(shards, _spec_for(name, specs))
    return full


def has_vocab_rows(name: str) -> bool:
    """A tensor whose dimension 0 is the padded vocabulary (its row count depends on TP)."""
    return ("word_embeddings" in name or name.startswith("output_layer")
            or name == "lm_head.bias")   # BERT's vocab-split output bias


def resize_vocab(full: dict[str, torch.Tensor], old_rows: int, new_rows: int) -> None:
    """Trim or zero-pad the vocabulary rows of the embedding/output weights in place.

    Rows past the real vocabulary are padding (Megatron pads to a multiple of
    ``--make-vocab-size-divisible-by`` x TP), so a different TP may need a different count.
    """
    if old_rows == new_rows:
        return
    for name, tensor in list(full.items()):
        if not has_vocab_rows(name) or tensor.dim() == 0 or tensor.shape[0] != old_rows:
            continue
        if new_rows < old_rows:
            full[name] = tensor[:new_rows].clone()
        else:
            pad = tensor.new_zeros((new_rows - old_rows,) + tuple(tensor.shape[1:]))
            full[name] = torch.cat([tensor, pad])
