"""MSLG schedule of the random-LTD kept length, and the per-microbatch plans.

Kept length at step ``t`` (0 at the first step), DESIGN section 3::

    r(t) = floor(r_s + min(t / T_r, 1) * (S_max - r_s))

rounded down to a multiple of ``seq_per_step`` (so it can start below ``r_s``: r_s 100,
step 16 gives 96, as DeepSpeed; only a result of 0 is raised to ``seq_per_step``); never
above ``S_max``, which is reached once the unclamped ``t / T_r`` makes the rounded value
get there (DeepSpeed's arithmetic); capped at the current, possibly curriculum-truncated,
sequence length ``S``. Once ``r >= S`` nothing is dropped.
Reference: 128 -> 2048, step 16, T_r 200000 gives 608 at 50000, 1088 at 100000, 2032 at
199999 and 2048 from 200000.
"""
from __future__ import annotations

import math
import warnings

from megatron.data_efficiency.random_ltd.config import RandomLTDConfig
from megatron.data_efficiency.random_ltd.plan import TokenDropPlan
from megatron.data_efficiency.token_accounting import tokens_per_step


def mslg_kept_length(iteration: int, min_seqlen: int, max_seqlen: int, total_steps: int,
                     seq_per_step: int) -> int:
    """The MSLG kept length at 0-based step ``iteration`` (before the ``S`` cap)."""
    if iteration < 0:
        raise ValueError(f"random-LTD schedule: iteration must be >= 0, got {iteration}")
    if total_steps <= 0 or min_seqlen >= max_seqlen:   # DeepSpeed starts at r_s = S_max and stays
        return max_seqlen
    # DeepSpeed's RandomLTDScheduler expression, float for float. t / T is not clamped at 1:
    # past T_r the value keeps growing until its rounded-down multiple reaches S_max, so a
    # S_max that is no multiple of seq_per_step is reached (shortly after T_r).
    r = math.floor(float(iteration) / total_steps * (max_seqlen - min_seqlen) + min_seqlen)
    r -= r % seq_per_step
    if r <= 0:
        # Deliberate difference: DeepSpeed keeps 0 tokens while r_s < seq_per_step.
        r = seq_per_step
    return min(r, max_seqlen)


class RandomLTDScheduler:
    """Turns the step number into a kept length and a :class:`TokenDropPlan`.

    Args:
        config: the settings (``enabled=False`` gives a scheduler that never drops).
        num_layers: layers in the whole model (all pipeline stages).
        seq_length: the model's ``--seq-length``, used when ``config.max_seqlen`` is None.
        seed: the run's seed; together with step, microbatch, layer and DP rank it fixes
            every draw.
    """

    def __init__(self, config: RandomLTDConfig, num_layers: int, seq_length: int,
                 seed: int) -> None:
        self.config = config
        self.num_layers = num_layers
        self.seed = int(seed)
        self.layer_ids = frozenset(config.resolve_layer_ids(num_layers))
        self.max_seqlen = config.max_seqlen if config.max_seqlen is not None else seq_length
        if config.enabled and self.max_seqlen < config.min_seqlen:
            raise ValueError(f"random-LTD: --random-ltd-min-seqlen {config.min_seqlen} exceeds "
                             f"the sequence length {self.max_seqlen}")
        self.last_iteration: int | None = None
        self.last_kept_length: int | None = None

    @property
    def enabled(self) -> bool:
        return self.config.enabled and bool(self.layer_ids)

    @property
    def dropping_layers(self) -> int:
        """How many layers drop tokens (``L_r`` of the token accounting)."""
        return len(self.layer_ids) if self.enabled else 0

    def kept_length(self, iteration: int, seq_length: int | None = None) -> int:
        """Kept length ``r`` at step ``iteration``, capped at ``seq_length`` if given.

        With random-LTD off this is the full length (``seq_length`` or ``S_max``).
        """
        if not self.enabled:
            return seq_length if seq_length is not None else self.max_seqlen
        cfg = self.config
        r = mslg_kept_length(iteration, cfg.min_seqlen, self.max_seqlen,
                             cfg.total_steps, cfg.seq_per_step)
        if seq_length is not None:
            r = min(r, seq_length)
        self.last_iteration, self.last_kept_length = iteration, r
        return r

    def plan_for(self, iteration: int, microbatch: int, seq_length: int,
                 dp_rank: int) -> TokenDropPlan | None:
        """The plan of one microbatch, or ``None`` when no token is dropped.

        Args:
            iteration: 0-based training step.
            microbatch: microbatch index within the step.
            seq_length: the sequence length this microbatch really has (after curriculum
                truncation).
            dp_rank: data-parallel rank.
        """
        if not self.enabled:
            return None
        r = self.kept_length(iteration, seq_length)
        if r >= seq_length:
            return None
        return TokenDropPlan(layer_ids=self.layer_ids, kept_length=r, seed=self.seed,
                             iteration=iteration, microbatch=microbatch, dp_rank=dp_rank)

    def consumed_tokens(self, iteration: int, rows: int, seq_length: int) -> int:
        """Layer-weighted tokens of one step (DESIGN section 3) via token_accounting.

        Args:
            iteration: 0-based training step.
            rows: sequences in the global batch (after any curriculum reshaping).
            seq_length: tokens per sequence this step (after curriculum truncation).
        """
        return tokens_per_step(rows, seq_length, self.num_layers, self.dropping_layers,
                               self.kept_length(iteration, seq_length))

    def tensorboard_scalars(self, iteration: int, seq_length: int) -> dict[str, float]:
        """``seqlen/random_ltd_reserved_length``: the kept length (full length when off)."""
        return {"seqlen/random_ltd_reserved_length": float(self.kept_length(iteration,
                                                                            seq_length))}

    def state_dict(self) -> dict:
        """The schedule is a pure function of the step; this records it for checks and logs."""
        return {"seed": self.seed, "layer_ids": sorted(self.layer_ids),
                "min_seqlen": self.config.min_seqlen, "max_seqlen": self.max_seqlen,
                "total_steps": self.config.total_steps,
                "seq_per_step": self.config.seq_per_step,
                "last_iteration": self.last_iteration,
                "last_kept_length": self.last_kept_length}

    def load_state_dict(self, state: dict) -> None:
        """Restores the last values; warns when the settings changed since the checkpoint."""
        changed = [k for k in ("seed", "layer_ids", "min_seqlen", "max_seqlen", "total_steps",
                               "seq_per_step") if state.get(k) != self.state_dict()[k]]
        if changed:
            warnings.warn(f"random-LTD settings {changed} differ from the checkpoint; the "
                          f"resumed run will not reproduce the original draws/schedule")
        self.last_iteration = state.get("last_iteration")
        self.last_kept_length = state.get("last_kept_length")
