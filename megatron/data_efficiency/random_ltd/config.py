"""Random-LTD settings: one dataclass, built from flags or a DeepSpeed-shaped JSON section.

Flags (Megatron-DeepSpeed names)::

    --random-ltd                    turn it on
    --random-ltd-layer-num N        the N middle layers drop tokens
    --random-ltd-layer-ids I [I..]  exactly these global 0-based layers drop tokens
    --random-ltd-min-seqlen r_s     kept length at step 0 (default 128)
    --random-ltd-total-steps T_r    steps until the full length is kept (required)
    --random-ltd-seq-per-step k     kept length is a multiple of k (default 16)

DeepSpeed's ``data_efficiency.data_routing.random_ltd`` section maps onto the same fields
(see :meth:`RandomLTDConfig.from_deepspeed_dict`).

Layer choice: explicit ids win; ``layer_num`` alone picks the ``N`` layers centred in
the stack, ``(L - N) // 2 .. (L - N) // 2 + N - 1``, which for DeepSpeed's recipes
(``N = L - 2``, ids ``1 .. L-2``) is every layer but the first and the last. DeepSpeed
itself requires ``random_ltd_layer_num == len(random_ltd_layer_id)``; when both are
given the same check is made here. Neither given: all layers but the first and last.
"""
from __future__ import annotations

from dataclasses import dataclass

from megatron.data_efficiency import deepspeed_keys as dsk

DEFAULT_MIN_SEQLEN = 128
DEFAULT_SEQ_PER_STEP = 16

FLAG_NAMES = ("random_ltd_layer_num", "random_ltd_layer_ids", "random_ltd_min_seqlen",
              "random_ltd_total_steps", "random_ltd_seq_per_step")


@dataclass(frozen=True)
class RandomLTDConfig:
    """Random layerwise token dropping settings.

    Attributes:
        enabled: whether any layer drops tokens.
        layer_ids: explicit global 0-based dropping layers, or ``None``.
        layer_num: number of (centred) dropping layers, or ``None``.
        min_seqlen: ``r_s``, kept length at step 0.
        max_seqlen: ``S_max``, the length the schedule grows to (``None``: the model's
            sequence length, filled in by :func:`config_from_args`).
        total_steps: ``T_r``, steps for the kept length to reach ``max_seqlen``.
        seq_per_step: the kept length is rounded down to a multiple of this.
    """

    enabled: bool = False
    layer_ids: tuple[int, ...] | None = None
    layer_num: int | None = None
    min_seqlen: int = DEFAULT_MIN_SEQLEN
    max_seqlen: int | None = None
    total_steps: int | None = None
    seq_per_step: int = DEFAULT_SEQ_PER_STEP
    total_layer_num: int | None = None
    model_type: str | None = None   # DeepSpeed's "decoder" (GPT) / "encoder" (BERT)

    def check_total_layers(self, num_layers: int) -> None:
        """DeepSpeed's ``total_layer_num`` must be the model's ``--num-layers``."""
        if self.total_layer_num is not None and self.total_layer_num != num_layers:
            raise ValueError(f"data_routing.random_ltd.total_layer_num {self.total_layer_num} "
                             f"contradicts --num-layers {num_layers}")

    def __post_init__(self) -> None:
        if not self.enabled:
            return
        problems = []
        if self.total_steps is None or self.total_steps < 0:
            problems.append(f"total steps T_r (--random-ltd-total-steps / require_steps) must "
                            f"be given and >= 0, got {self.total_steps}")
        if self.min_seqlen < 1:
            problems.append(f"min seqlen r_s (--random-ltd-min-seqlen / min_value) must be "
                            f">= 1, got {self.min_seqlen}")
        if self.seq_per_step < 1:
            problems.append(f"--random-ltd-seq-per-step / seq_per_step must be >= 1, got "
                            f"{self.seq_per_step}")
        if self.max_seqlen is not None and self.max_seqlen < self.min_seqlen:
            problems.append(f"max seqlen {self.max_seqlen} (max_value / --seq-length) is below "
                            f"min seqlen {self.min_seqlen} (--random-ltd-min-seqlen / min_value)")
        if (self.layer_ids is not None and self.layer_num is not None
                and len(self.layer_ids) != self.layer_num):
            problems.append(f"--random-ltd-layer-num / random_ltd_layer_num = {self.layer_num} "
                            f"contradicts {len(self.layer_ids)} ids in --random-ltd-layer-ids "
                            f"/ random_ltd_layer_id")
        if problems:
            raise ValueError("random-LTD config: " + "; ".join(problems))

    def resolve_layer_ids(self, num_layers: int) -> tuple[int, ...]:
        """The global ids of the dropping layers in a model of ``num_layers`` layers."""
        if not self.enabled:
            return ()
        if self.layer_ids is not None:
            ids = tuple(sorted(set(self.layer_ids)))
            if len(ids) != len(self.layer_ids):
                raise ValueError(f"--random-ltd-layer-ids {list(self.layer_ids)} repeats a layer")
            bad = [i for i in ids if not 0 <= i < num_layers]
            if bad:
                raise ValueError(f"--random-ltd-layer-ids {bad} outside 0..{num_layers - 1} "
                                 f"(--num-layers {num_layers})")
            return ids
        if self.layer_num is not None:
            if not 1 <= self.layer_num <= num_layers:
                raise ValueError(f"--random-ltd-layer-num {self.layer_num} must be within "
                                 f"1..{num_layers} (--num-layers)")
            start = (num_layers - self.layer_num) // 2
            return tuple(range(start, start + self.layer_num))
        if num_layers < 3:
            raise ValueError(f"random-LTD by default drops in every layer but the first and "
                             f"last, and --num-layers {num_layers} leaves none; give "
                             f"--random-ltd-layer-ids")
        return tuple(range(1, num_layers - 1))

    @classmethod
    def from_deepspeed_dict(cls, d: dict, seq_length: int | None = None) -> RandomLTDConfig:
        """Reads DeepSpeed's ``data_routing.random_ltd`` section.

        Args:
            d: the ``random_ltd`` dict (or a whole ``data_efficiency`` dict containing
                ``data_routing.random_ltd``).
            seq_length: the model's sequence length, used when ``max_value`` is absent.

        Returns:
            The config. As in DeepSpeed, ``random_ltd.enabled`` alone decides (its engine
            never reads ``data_routing.enabled``). Which keys are read, refused (e.g. an
            enabled ``layer_token_lr_schedule``: DeepSpeed raises on it too) or no-ops:
            ``deepspeed_keys.py``.
        """
        if "data_routing" in d:
            routing = dsk.check_section(d["data_routing"], dsk.ROUTING, "data_routing")
            d = routing.get("random_ltd", {})
        dsk.check_section(d, dsk.LTD, "data_routing.random_ltd")
        dsk.check_section(d.get("layer_token_lr_schedule", {}), dsk.LTD_LR,
                          "data_routing.random_ltd.layer_token_lr_schedule")
        if not d.get("enabled", False):
            return cls(enabled=False)
        if d.get("model_type", "decoder") not in ("decoder", "encoder"):
            raise ValueError(f"data_routing.random_ltd.model_type {d['model_type']!r} must be "
                             f"'decoder' or 'encoder'")
        sched = d.get("random_ltd_schedule", {})
        dsk.check_section(sched, dsk.LTD_SCHEDULE, "data_routing.random_ltd.random_ltd_schedule")
        sconf = sched.get("schedule_config", {})
        dsk.check_section(sconf, dsk.LTD_SCHEDULE_CONFIG,
                          "data_routing.random_ltd.random_ltd_schedule.schedule_config")
        ids = d.get("random_ltd_layer_id")
        max_value = sched.get("max_value", seq_length)
        return cls(enabled=True,
                   layer_ids=None if ids is None else tuple(int(i) for i in ids),
                   layer_num=d.get("random_ltd_layer_num"),
                   min_seqlen=int(sched.get("min_value", DEFAULT_MIN_SEQLEN)),
                   max_seqlen=None if max_value is None else int(max_value),
                   total_steps=sconf.get("require_steps"),
                   seq_per_step=int(sconf.get("seq_per_step", DEFAULT_SEQ_PER_STEP)),
                   total_layer_num=d.get("total_layer_num"), model_type=d.get("model_type"))
