"""Every tensor of a run described by its global shape and where this rank's pieces sit in
it, so that ``torch.distributed.checkpoint`` (DCP) writes each global tensor once and
reads it back under any layout (it reads whatever saved chunks overlap the pieces asked
for).

A :class:`GlobalTensor` is one entry of the state dict handed to DCP: the global shape
and this rank's pieces, each a view (``[sizes]``) of a live tensor at ``offsets`` of the
global one. Pieces are rectangular boxes; a flat range of a tensor (the ZeRO-1 optimizer's
shards cut parameters anywhere) becomes a few boxes (:func:`flat_boxes`).

The two planners are DCP's default ones with our state dict: write items and read items
made from the pieces, the rest (deduplicating pieces several ranks hold, the metadata,
validation that no two saved chunks overlap, resharding reads) is DCP's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner, DefaultSavePlanner
from torch.distributed.checkpoint.metadata import (ChunkStorageMetadata, MetadataIndex,
                                                   TensorProperties, TensorStorageMetadata)
from torch.distributed.checkpoint.planner import (LoadPlan, SavePlan, TensorWriteData, WriteItem,
                                                  WriteItemType)
from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list


@dataclass
class GlobalTensor:
    """This rank's pieces of one global tensor.

    Attributes:
        shape: the global tensor's shape.
        pieces: ``{offsets: view}``, each view ``[sizes]`` sitting at ``offsets``.
    """

    shape: tuple[int, ...]
    pieces: dict[tuple[int, ...], torch.Tensor] = field(default_factory=dict)

    def add(self, offsets: tuple[int, ...], view: torch.Tensor) -> None:
        if view.numel():
            self.pieces[tuple(offsets)] = view

    def staged(self) -> "GlobalTensor":
        """A copy on the CPU, detached from the live tensors (an asynchronous save writes
        it while training goes on)."""
        return GlobalTensor(self.shape, {o: v.detach().to("cpu", copy=True)
                                         for o, v in self.pieces.items()})


def flat_boxes(shape: tuple[int, ...], lo: int, hi: int) -> list[tuple[tuple, tuple]]:
    """The flat (row-major) range ``[lo, hi)`` of a tensor of ``shape`` as boxes
    ``(offsets, sizes)``, in order; each box is contiguous in that order, so the matching
    slice of a flat tensor is ``flat[a:b].view(sizes)``."""
    if lo >= hi:
        return []
    if not shape:
        return [((), ())]
    inner = math.prod(shape[1:])
    rest = tuple(shape[1:])
    boxes, row = [], lo // inner

    def within(r: int, a: int, b: int) -> list[tuple[tuple, tuple]]:
        return [((r, *o), (1, *s)) for o, s in flat_boxes(rest, a - r * inner, b - r * inner)]

    if lo % inner:                                   # the head: part of one row
        end = min(hi, (row + 1) * inner)
        boxes += within(row, lo, end)
        lo, row = end, row + 1
    whole_end = hi // inner
    if lo < hi and whole_end > row:                  # whole rows
        boxes.append(((row,) + (0,) * len(rest), (whole_end - row,) + rest))
        lo, row = whole_end * inner, whole_end
    if lo < hi:                                      # the tail: part of one row
        boxes += within(row, lo, hi)
    return boxes


def add_flat_range(target: GlobalTensor, flat: torch.Tensor, local_shape: tuple[int, ...],
                   origin: tuple[int, ...], lo: int) -> None:
    """Add the pieces of ``flat`` (``[n]``), which holds the flat elements ``[lo, lo + n)``
    of a local tensor of ``local_shape`` sitting at ``origin`` of the global tensor."""
    at = 0
    for offsets, sizes in flat_boxes(local_shape, lo, lo + flat.numel()):
        n = math.prod(sizes)
        target.add(tuple(o + g for o, g in zip(offsets, origin)), flat[at:at + n].view(sizes))
        at += n


class SavePlanner(DefaultSavePlanner):
    """DCP's default save planner over a state dict of :class:`GlobalTensor`."""

    def __init__(self) -> None:
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)

    def create_local_plan(self) -> SavePlan:
        items = []
        for fqn, tensor in self.state_dict.items():
            for offsets, view in tensor.pieces.items():
                items.append(WriteItem(
                    index=MetadataIndex(fqn, torch.Size(offsets)), type=WriteItemType.SHARD,
                    tensor_data=TensorWriteData(
                        chunk=ChunkStorageMetadata(torch.Size(offsets), view.shape),
                        properties=TensorProperties.create_from_tensor(view),
                        size=torch.Size(tensor.shape))))
        self.plan = SavePlan(items)
        return self.plan

    def lookup_object(self, index: MetadataIndex) -> torch.Tensor:
        # a compact CPU copy: torch.save of a view would write its whole storage
        return self.state_dict[index.fqn].pieces[tuple(index.offset)].detach().to(
            "cpu", copy=True)


class LoadPlanner(DefaultLoadPlanner):
    """DCP's default load planner over a state dict of :class:`GlobalTensor`: every piece
    is filled, in place, from whatever saved chunks overlap it.

    Args:
        grown_rows_ok: names whose dimension 0 may differ from the saved one (the padded
            vocabulary rows, which depend on the tensor-parallel size): the common rows
            are read, the rest keep their values.
    """

    def __init__(self, grown_rows_ok=lambda fqn: False) -> None:
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)
        self.grown_rows_ok = grown_rows_ok

    def set_up_planner(self, state_dict, metadata=None, is_coordinator: bool = False) -> None:
        # the default one walks the state dict for meta tensors, dropping other types
        self.original_state_dict = self.state_dict = state_dict
        self.metadata, self.is_coordinator = metadata, is_coordinator

    def create_local_plan(self) -> LoadPlan:
        saved, requests = self.metadata.state_dict_metadata, []
        for fqn, tensor in self.state_dict.items():
            md = saved.get(fqn)
            if not isinstance(md, TensorStorageMetadata):
                raise KeyError(fqn)
            if tuple(md.size) != tuple(tensor.shape) and not (
                    self.grown_rows_ok(fqn) and tuple(md.size)[1:] == tuple(tensor.shape)[1:]):
                raise ValueError(f"{fqn}: saved with shape {tuple(md.size)}, this run has "
                                 f"{tuple(tensor.shape)}")
            chunks = [ChunkStorageMetadata(torch.Size(o), v.shape)
                      for o, v in tensor.pieces.items()]
            requests += create_read_items_for_chunk_list(fqn, md, chunks)
        return LoadPlan(requests)

    def lookup_tensor(self, index: MetadataIndex) -> torch.Tensor:
        return self.state_dict[index.fqn].pieces[tuple(index.offset)]
