"""Learning-rate warmup and decay, measured in steps, samples or consumed tokens.

Warmup and decay may be given in different units (e.g. warmup in steps or as a fraction,
decay in tokens); the reference failed exactly on token-based decay with fractional
warmup. Warmup is measured in its own unit (a fraction means a fraction of the decay span,
in the decay's unit), so "warmup 100 steps" ends at step 100 even when curriculum learning
or random-LTD make early steps consume fewer tokens. Decay is measured in its unit; where
the units differ the decay starts from the warmup span converted with the nominal
``samples_per_step`` (global batch size) and ``tokens_per_sample`` (sequence length), and
the LR holds at its peak until then. The schedule is a small pure function of progress
(``lr_at``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

UNITS = ("steps", "samples", "tokens")


@dataclass(frozen=True)
class ScheduleConfig:
    """An LR schedule with warmup and decay in the same ``unit``."""
    max_lr: float
    min_lr: float
    decay_style: str          # "linear" | "cosine" | "constant"
    unit: str                 # "steps" | "samples" | "tokens": what decay progress counts
    warmup: float             # warmup length in ``warmup_unit``
    decay: float              # end of decay in ``unit`` (counted from 0, includes warmup)
    init_lr: float = 0.0
    weight_decay: float = 0.0
    warmup_unit: str = ""     # unit of ``warmup``; "" means ``unit``
    decay_start: float = -1.0  # where decay starts, in ``unit``; < 0 means ``warmup``

    @property
    def warmup_progress_unit(self) -> str:
        return self.warmup_unit or self.unit

    @property
    def decay_begin(self) -> float:
        return self.warmup if self.decay_start < 0 else self.decay_start


def _to_samples(value: float, unit: str, samples_per_step: int, tokens_per_sample: int) -> float:
    return {"steps": value * samples_per_step, "samples": value,
            "tokens": value / tokens_per_sample}[unit]


def convert(value: float, src: str, dst: str, samples_per_step: int,
            tokens_per_sample: int) -> float:
    """Convert a span between steps, samples and tokens (nominal batch and length)."""
    if src not in UNITS or dst not in UNITS:
        raise ValueError(f"unknown schedule unit {src!r} or {dst!r}; use one of {UNITS}")
    samples = _to_samples(value, src, samples_per_step, tokens_per_sample)
    return {"steps": samples / samples_per_step, "samples": samples,
            "tokens": samples * tokens_per_sample}[dst]


def build_schedule_config(max_lr: float, min_lr: float, decay_style: str,
                          warmup: tuple[float, str], decay: tuple[float, str],
                          samples_per_step: int, tokens_per_sample: int,
                          init_lr: float = 0.0, weight_decay: float = 0.0) -> ScheduleConfig:
    """Put warmup and decay into the decay's unit.

    Args:
        warmup: ``(value, unit)`` with unit in steps / samples / tokens, or
            ``(f, "fraction")`` meaning ``f`` times the decay span.
        decay: ``(value, unit)``: where decay ends.
        samples_per_step: global batch size, for step <-> sample conversion.
        tokens_per_sample: sequence length, for sample <-> token conversion.
    """
    if decay_style not in ("linear", "cosine", "constant"):
        raise ValueError(f"--lr-decay-style must be linear, cosine or constant, got {decay_style!r}")
    decay_value, unit = decay
    if unit not in UNITS:
        raise ValueError(f"unknown decay unit {unit!r}")
    wvalue, wunit = warmup
    if wunit == "fraction":
        wvalue, wunit = wvalue * decay_value, unit
    warm_in_decay_unit = convert(wvalue, wunit, unit, samples_per_step, tokens_per_sample)
    if decay_style != "constant" and warm_in_decay_unit > decay_value:
        raise ValueError(f"LR warmup ({warm_in_decay_unit:g} {unit}) is longer than the decay "
                         f"span ({decay_value:g} {unit}); check --lr-warmup-* and --lr-decay-*")
    mixed = wunit != unit
    return ScheduleConfig(max_lr=max_lr, min_lr=min_lr, decay_style=decay_style, unit=unit,
                          warmup=float(wvalue), decay=float(decay_value), init_lr=init_lr,
                          weight_decay=weight_decay, warmup_unit=wunit if mixed else "",
                          decay_start=float(warm_in_decay_unit) if mixed else -1.0)


def lr_at(progress: float, cfg: ScheduleConfig, warmup_progress: float | None = None) -> float:
    """The learning rate (Megatron's formulas).

    Args:
        progress: progress in ``cfg.unit`` (drives the decay).
        warmup_progress: progress in ``cfg.warmup_progress_unit``; None means the units
            are the same and ``progress`` is used.
    """
    wp = progress if warmup_progress is None else warmup_progress
    if cfg.warmup > 0 and wp <= cfg.warmup:
        return cfg.init_lr + (cfg.max_lr - cfg.init_lr) * wp / cfg.warmup
    if cfg.decay_style == "constant":
        return cfg.max_lr
    if progress > cfg.decay:
        return cfg.min_lr
    begin = cfg.decay_begin
    span = cfg.decay - begin
    ratio = min(1.0, max(0.0, (progress - begin) / span)) if span > 0 else 1.0
    if cfg.decay_style == "linear":
        coeff = 1.0 - ratio
    else:
        coeff = 0.5 * (math.cos(math.pi * ratio) + 1.0)
    return cfg.min_lr + coeff * (cfg.max_lr - cfg.min_lr)


def rebatched(cfg: ScheduleConfig, samples_per_step: int,
              tokens_per_sample: int) -> ScheduleConfig:
    """``cfg`` with steps counted at another batch size (finetuning's multiple-choice rows):
    a warmup in another unit than the decay is converted again."""
    return build_schedule_config(
        max_lr=cfg.max_lr, min_lr=cfg.min_lr, decay_style=cfg.decay_style,
        warmup=(cfg.warmup, cfg.warmup_unit or cfg.unit), decay=(cfg.decay, cfg.unit),
        samples_per_step=samples_per_step, tokens_per_sample=tokens_per_sample,
        init_lr=cfg.init_lr, weight_decay=cfg.weight_decay)


class OptimizerParamScheduler:
    """Sets ``lr`` (times the group's ``lr_mult``) and ``weight_decay`` (times
    ``wd_mult``) on the optimizer's param groups as training progresses.

    ``override_on_load`` is ``--override-opt_param-scheduler`` (see ``load_state_dict``).
    ``lr_rule`` (``step``'s argument, kept until the next ``step``): a function of the
    schedule's LR giving the LR applied, e.g. token-budget batching's scaling to the
    step's batch size (DeepSpeed's ``VariableBatchSizeLR``); None: the schedule's LR.
    """

    def __init__(self, optimizer, config: ScheduleConfig, override_on_load: bool = False) -> None:
        self.optimizer = optimizer
        self.config = config
        self.override_on_load = override_on_load
        self.num_steps = 0
        self.num_samples = 0
        self.num_tokens = 0
        self.lr_rule: Callable[[float], float] | None = None
        self.step(0, 0, 0)

    def progress_in(self, unit: str) -> float:
        """Progress so far in ``unit`` (steps, samples or tokens)."""
        return {"steps": self.num_steps, "samples": self.num_samples,
                "tokens": self.num_tokens}[unit]

    @property
    def progress(self) -> float:
        """Progress in the decay's unit."""
        return self.progress_in(self.config.unit)

    def get_lr(self) -> float:
        """The LR applied now: the schedule's at the progress, through ``lr_rule``."""
        lr = lr_at(self.progress, self.config, self.progress_in(self.config.warmup_progress_unit))
        return lr if self.lr_rule is None else self.lr_rule(lr)

    def step(self, increment_steps: int = 1, increment_samples: int = 0,
             increment_tokens: int = 0,
             lr_rule: Callable[[float], float] | None = None) -> float:
        """Advance progress and apply the new LR / WD (through ``lr_rule``); returns the
        LR."""
        self.lr_rule = lr_rule
        self.num_steps += increment_steps
        self.num_samples += increment_samples
        self.num_tokens += increment_tokens
        lr = self.get_lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
            group["weight_decay"] = self.config.weight_decay * group.get("wd_mult", 1.0)
        return lr

    def state_dict(self) -> dict:
        return {"num_steps": self.num_steps, "num_samples": self.num_samples,
                "num_tokens": self.num_tokens, "config": asdict(self.config)}

    def load_state_dict(self, state: dict) -> None:
        """Restore progress (steps, samples, tokens); the schedule is the current flags'.

        A schedule that differs from the checkpoint's is printed. With
        ``override_on_load`` (``--override-opt_param-scheduler``) that is what was asked;
        without it Megatron stops with an assertion, here the line says so and training
        goes on with the flags' schedule (README, differences).
        """
        saved = state.get("config", {})
        changed = {k: (v, getattr(self.config, k)) for k, v in saved.items()
                   if getattr(self.config, k, v) != v}
        described = {k: f"{a} -> {b}" for k, (a, b) in changed.items()}
        if changed and self.override_on_load:
            print(f" > --override-opt_param-scheduler: the LR schedule comes from the flags, "
                  f"not the checkpoint: {described}", flush=True)
        elif changed:
            print(f" > WARNING: the LR schedule of the flags differs from the checkpoint's "
                  f"({described}); using the flags' (Megatron would stop here without "
                  f"--override-opt_param-scheduler)", flush=True)
        self.num_steps = int(state["num_steps"])
        self.num_samples = int(state["num_samples"])
        self.num_tokens = int(state["num_tokens"])
        self.step(0, 0, 0)
