"""MSLG schedule of the random-LTD kept length (pure in the step).

Kept length at step ``t`` (0 at the first step), DESIGN section 3::

    r(t) = floor(r_s + t / T_r * (S_max - r_s))     (pacing.paced_value, DeepSpeed's float arithmetic)

rounded down to a multiple of ``seq_per_step`` (so it can start below ``r_s``: r_s 100,
step 16 gives 96, as DeepSpeed; only a result of 0 is raised to ``seq_per_step``); never
above ``S_max``, which is reached once the unclamped ``t / T_r`` makes the rounded value
get there (DeepSpeed's arithmetic); capped at the current, possibly curriculum-truncated,
sequence length ``S``. Once ``r >= S`` nothing is dropped.
Reference: 128 -> 2048, step 16, T_r 200000 gives 608 at 50000, 1088 at 100000, 2032 at
199999 and 2048 from 200000.
"""
from __future__ import annotations


from megatron.data_efficiency.random_ltd.config import RandomLTDConfig
from megatron.data_efficiency.pacing import paced_value


def mslg_kept_length(iteration: int, min_seqlen: int, max_seqlen: int, total_steps: int,
                     seq_per_step: int) -> int:
    """The MSLG kept length at 0-based step ``iteration`` (before the ``S`` cap)."""
    if iteration < 0:
        raise ValueError(f"random-LTD schedule: iteration must be >= 0, got {iteration}")
    if min_seqlen >= max_seqlen:   # DeepSpeed starts at r_s = S_max and stays
        return max_seqlen
    # Deliberate difference: where DeepSpeed's value is 0 (r_s < seq_per_step early on) it
    # keeps no token at all; here one seq_per_step is kept.
    return int(paced_value(iteration, total_steps, min_seqlen, max_seqlen, seq_per_step,
                           minimum=seq_per_step))


class RandomLTDScheduler:
    """Turns the step number into a kept length (the step plan reads it once a step).

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

    @property
    def enabled(self) -> bool:
        return self.config.enabled and bool(self.layer_ids)

    def kept_length(self, iteration: int, seq_length: int | None = None) -> int | None:
        """Kept length ``r`` at step ``iteration``, capped at ``seq_length`` if given;
        None when random-LTD is off. Pure: a function of the config and the step."""
        if not self.enabled:
            return None
        cfg = self.config
        r = mslg_kept_length(iteration, cfg.min_seqlen, self.max_seqlen,
                             cfg.total_steps, cfg.seq_per_step)
        return r if seq_length is None else min(r, seq_length)
