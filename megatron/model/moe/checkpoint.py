"""Expert weights across expert-parallel ranks: the pure renaming between one rank's file
(local expert indices ``...mlp.experts.{i}...``) and a whole model (global expert ids).

Expert-parallel rank ``r`` of ``EP`` holds global experts ``r * E / EP .. (r + 1) * E /
EP - 1`` as its local ``0 .. E / EP - 1`` (Megatron-LM's layout); every rank's file also
holds the dense weights, identical across the expert-parallel ranks.
"""
from __future__ import annotations

import re

import torch

_EXPERT_KEY = re.compile(r"^(.*\.experts\.)(\d+)(\..*)$")


def _renumber(state: dict[str, torch.Tensor], offset: int, keep=None) -> dict:
    out = {}
    for key, value in state.items():
        match = _EXPERT_KEY.match(key)
        if match is None:
            out[key] = value
            continue
        index = int(match.group(2)) + offset
        if keep is None or keep(index):
            out[f"{match.group(1)}{index}{match.group(3)}"] = value
    return out


def to_global_expert_ids(state: dict[str, torch.Tensor], ep_rank: int,
                         num_local_experts: int) -> dict[str, torch.Tensor]:
    """One expert-parallel rank's state dict with its local expert indices made global."""
    return _renumber(state, ep_rank * num_local_experts)


def merge_expert_parallel(parts: list[dict[str, torch.Tensor]],
                          num_experts: int) -> dict[str, torch.Tensor]:
    """Per expert-parallel rank state dicts (in rank order) -> one with global expert ids.

    Raises:
        ValueError: when the ranks' dense weights differ (not one model).
    """
    local = num_experts // len(parts)
    merged: dict[str, torch.Tensor] = {}
    for rank, part in enumerate(parts):
        for key, value in to_global_expert_ids(part, rank, local).items():
            if key in merged and not torch.equal(merged[key], value):
                raise ValueError(f"expert-parallel rank {rank} holds a different {key} "
                                 "than rank 0: the files are not one model")
            merged[key] = value
    return merged


def split_expert_parallel(state: dict[str, torch.Tensor], num_experts: int,
                          ep: int) -> list[dict[str, torch.Tensor]]:
    """A state dict with global expert ids -> ``ep`` state dicts with local indices."""
    if num_experts % ep != 0:
        raise ValueError(f"--target-expert-parallel-size {ep} does not divide "
                         f"--num-experts {num_experts}")
    local = num_experts // ep
    return [_renumber(state, -r * local, keep=lambda i, r=r: 0 <= i < local)
            for r in range(ep)]
