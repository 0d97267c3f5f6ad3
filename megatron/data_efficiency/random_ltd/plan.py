"""Which tokens a dropping layer keeps: the per-microbatch token-drop plan.

The draw for one (iteration, microbatch, layer, data-parallel rank) comes from its own
``torch.Generator`` seeded by a stable hash of those numbers and the run's seed, so:

* every tensor-parallel rank and every pipeline stage computes the same indices with no
  communication (they share seed, iteration, microbatch and DP rank);
* a resumed run draws exactly what the uninterrupted run drew;
* the global RNG (dropout, data shuffling) is never touched.

The scores are always drawn on the CPU, so the indices do not depend on the device type
either; only the final ``[b, r]`` index tensor is moved to the requested device.
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

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
    """

    layer_ids: frozenset[int]
    kept_length: int
    seed: int
    iteration: int
    microbatch: int
    dp_rank: int

    def __post_init__(self) -> None:
        if self.kept_length < 1:
            raise ValueError(f"TokenDropPlan: kept_length must be >= 1, got {self.kept_length}")
        if not isinstance(self.layer_ids, frozenset):
            object.__setattr__(self, "layer_ids", frozenset(self.layer_ids))

    def drops(self, layer_id: int) -> bool:
        """Whether layer ``layer_id`` (global, 0-based) runs on the kept tokens only."""
        return layer_id in self.layer_ids

    def kept_indices(self, layer_id: int, batch_size: int, seq_length: int,
                     device: torch.device | str | None = None) -> torch.Tensor:
        """The kept positions of every sample for one layer.

        Args:
            layer_id: global layer id.
            batch_size: ``b``, samples in the microbatch.
            seq_length: ``s``, tokens per sample (must exceed ``kept_length``).
            device: where the indices are needed.

        Returns:
            ``[b, r]`` long on ``device``, distinct and ascending per row.
        """
        if self.kept_length > seq_length:
            raise ValueError(f"TokenDropPlan: cannot keep {self.kept_length} of "
                             f"{seq_length} tokens")
        generator = torch.Generator(device="cpu")
        generator.manual_seed(draw_seed(self.seed, self.iteration, self.microbatch,
                                        layer_id, self.dp_rank))
        idx = random_kept_indices(generator, batch_size, seq_length, self.kept_length)
        if device is not None and torch.device(device).type != "cpu":
            idx = idx.to(device)
        return idx
