"""Which tokens a dropping layer keeps: the per-microbatch token-drop plan.

The draw for one (iteration, microbatch, layer, data-parallel rank) comes from its own
``torch.Generator`` seeded by a stable hash of those numbers and the run's seed, so:

* every tensor-parallel rank and every pipeline stage computes the same indices with no
  communication (they share seed, iteration, microbatch and DP rank); training passes the
  step's global micro-batch number and DP rank 0 (``DataEfficiencyRuntime.token_drop_plan``),
  so the draws do not depend on the data-parallel size either;
* a resumed run draws exactly what the uninterrupted run drew;
* the global RNG (dropout, data shuffling) is never touched.

The scores are always drawn on the CPU, so the indices do not depend on the device type
either. In training every dropping layer's indices of a microbatch are drawn at once when
the step plan is made (``TokenDropPlan.draw``) and moved in one non-blocking copy.
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

import torch


def draw_seed(seed: int, iteration: int, microbatch: int, layer_id: int, dp_rank: int) -> int:
    """A 63-bit generator seed that is a stable function of its arguments.

    Python's ``hash`` is salted per process, so a cryptographic digest is used instead.
    """
    key = struct.pack("<5q", seed, iteration, microbatch, layer_id, dp_rank)
    digest = hashlib.blake2b(key, digest_size=8, person=b"random-ltd").digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def random_kept_indices(generator: torch.Generator, batch_size: int, seq_length: int,
                        kept_length: int) -> torch.Tensor:
    """An independent uniform ``kept_length``-subset of positions for every sample.

    The ``kept_length`` largest of ``seq_length`` i.i.d. uniform scores form a uniformly
    random subset; sorting keeps the tokens in their original order.

    Returns:
        ``[b, r]`` long on the CPU, ascending per row.
    """
    scores = torch.rand(batch_size, seq_length, generator=generator)  # [b, s]
    kept = scores.topk(kept_length, dim=1, sorted=False).indices  # [b, r]
    return kept.sort(dim=1).values


@dataclass(frozen=True)
class TokenDropPlan:
    """The random-LTD decisions of one microbatch.

    Attributes:
        layer_ids: global 0-based ids of the layers that drop tokens.
        kept_length: ``r``, tokens each dropping layer keeps per sample.
        seed: the run's random-LTD seed.
        iteration: 0-based training step.
        microbatch: index of the microbatch within the step.
        dp_rank: data-parallel rank (different ranks see different samples).
        indices: every dropping layer's kept positions, drawn at once by :meth:`draw`,
            ``[len(layer_ids), b, r]`` long on the model's device (layers in ascending
            id order); None: drawn on demand by :meth:`kept_indices`.
    """

    layer_ids: frozenset[int]
    kept_length: int
    seed: int
    iteration: int
    microbatch: int
    dp_rank: int
    indices: torch.Tensor | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kept_length < 1:
            raise ValueError(f"TokenDropPlan: kept_length must be >= 1, got {self.kept_length}")
        if not isinstance(self.layer_ids, frozenset):
            object.__setattr__(self, "layer_ids", frozenset(self.layer_ids))

    @classmethod
    def draw(cls, layer_ids: frozenset[int], kept_length: int, seed: int, iteration: int,
             microbatch: int, dp_rank: int, batch_size: int, seq_length: int,
             device: torch.device | str = "cpu") -> TokenDropPlan:
        """A plan whose indices for every dropping layer are drawn now, on the CPU (so they
        do not depend on the device), into one tensor (pinned when bound for CUDA) that is
        moved with a single ``non_blocking`` copy: the layer loop then only slices it, and
        no layer waits for a host-to-device copy."""
        plan = cls(layer_ids, kept_length, seed, iteration, microbatch, dp_rank)
        layers = sorted(plan.layer_ids)
        device = torch.device(device)
        host = torch.empty(len(layers), batch_size, kept_length, dtype=torch.long,
                           pin_memory=device.type == "cuda")          # [L_r, b, r]
        for i, layer_id in enumerate(layers):
            host[i] = plan._draw_one(layer_id, batch_size, seq_length)
        indices = host if device.type == "cpu" else host.to(device, non_blocking=True)
        object.__setattr__(plan, "indices", indices)
        return plan

    def drops(self, layer_id: int) -> bool:
        """Whether layer ``layer_id`` (global, 0-based) runs on the kept tokens only."""
        return layer_id in self.layer_ids

    def _draw_one(self, layer_id: int, batch_size: int, seq_length: int) -> torch.Tensor:
        if self.kept_length > seq_length:
            raise ValueError(f"TokenDropPlan: cannot keep {self.kept_length} of "
                             f"{seq_length} tokens")
        generator = torch.Generator(device="cpu")
        generator.manual_seed(draw_seed(self.seed, self.iteration, self.microbatch,
                                        layer_id, self.dp_rank))
        return random_kept_indices(generator, batch_size, seq_length, self.kept_length)

    def kept_indices(self, layer_id: int, batch_size: int, seq_length: int,
                     device: torch.device | str | None = None) -> torch.Tensor:
        """The kept positions of every sample for one layer.

        Args:
            layer_id: global layer id.
            batch_size: ``b``, samples in the microbatch.
            seq_length: ``s``, tokens per sample (must exceed ``kept_length``).
            device: where the indices are needed.

        Returns:
            ``[b, r]`` long on ``device``, distinct and ascending per row: a slice of the
            pre-drawn ``indices`` when the plan has them (no copy), else drawn now.
        """
        if self.indices is not None:
            if self.indices.shape[1] != batch_size:
                raise ValueError(f"TokenDropPlan: drawn for {self.indices.shape[1]} samples, "
                                 f"asked for {batch_size}")
            if device is not None and torch.device(device) != self.indices.device:
                raise ValueError(f"TokenDropPlan: indices are on {self.indices.device}, "
                                 f"asked for {device} (draw the plan for the model's device)")
            return self.indices[sorted(self.layer_ids).index(layer_id)]
        idx = self._draw_one(layer_id, batch_size, seq_length)
        if device is not None and torch.device(device).type != "cpu":
            idx = idx.to(device)
        return idx
