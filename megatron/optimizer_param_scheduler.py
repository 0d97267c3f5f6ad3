"""Learning-rate warmup and decay, measured in steps, samples or consumed tokens.

Warmup and decay may be given in different units (e.g. warmup as a fraction, decay in
tokens). ``build_schedule_config`` converts both into one unit at construction so the
schedule is a small pure function of progress (``lr_at``); the reference failed exactly
on token-based decay with fractional warmup. Conversions use the nominal
``samples_per_step`` (global batch size) and ``tokens_per_sample`` (sequence length).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

UNITS = ("steps", "samples", "tokens")


@dataclass(frozen=True)
class ScheduleConfig:
    """An LR schedule with warmup and decay in the same ``unit``."""
    max_lr: float
    min_lr: float
    decay_style: str          # "linear" | "cosine" | "constant"
    unit: str                 # "steps" | "samples" | "tokens": what progress counts
    warmup: float             # warmup length in ``unit``
    decay: float              # end of decay in ``unit`` (counted from 0, includes warmup)
    init_lr: float = 0.0
    weight_decay: float = 0.0


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
        warm = wvalue * decay_value
    else:
        warm = convert(wvalue, wunit, unit, samples_per_step, tokens_per_sample)
    if decay_style != "constant" and warm > decay_value:
        raise ValueError(f"LR warmup ({warm:g} {unit}) is longer than the decay span "
                         f"({decay_value:g} {unit}); check --lr-warmup-* and --lr-decay-*")
    return ScheduleConfig(max_lr=max_lr, min_lr=min_lr, decay_style=decay_style, unit=unit,
                          warmup=float(warm), decay=float(decay_value), init_lr=init_lr,
                          weight_decay=weight_decay)


def lr_at(progress: float, cfg: ScheduleConfig) -> float:
    """The learning rate after ``progress`` units (Megatron's formulas)."""
    if cfg.warmup > 0 and progress <= cfg.warmup:
        return cfg.init_lr + (cfg.max_lr - cfg.init_lr) * progress / cfg.warmup
    if cfg.decay_style == "constant":
        return cfg.max_lr
    if progress > cfg.decay:
        return cfg.min_lr
    span = cfg.decay - cfg.warmup
    ratio = (progress - cfg.warmup) / span if span > 0 else 1.0
    if cfg.decay_style == "linear":
        coeff = 1.0 - ratio
    else:
        coeff = 0.5 * (math.cos(math.pi * ratio) + 1.0)
    return cfg.min_lr + coeff * (cfg.max_lr - cfg.min_lr)


class OptimizerParamScheduler:
    """Sets ``lr`` (times the group's ``lr_mult``) and ``weight_decay`` (times
    ``wd_mult``) on the optimizer's param groups as training progresses."""

    def __init__(self, optimizer, config: ScheduleConfig) -> None:
        self.optimizer = optimizer
        self.config = config
        self.num_steps = 0
        self.num_samples = 0
        self.num_tokens = 0
        self.step(0, 0, 0)

    @property
    def progress(self) -> float:
        """Progress in the schedule's unit."""
        return {"steps": self.num_steps, "samples": self.num_samples,
                "tokens": self.num_tokens}[self.config.unit]

    def get_lr(self) -> float:
        return lr_at(self.progress, self.config)

    def step(self, increment_steps: int = 1, increment_samples: int = 0,
             increment_tokens: int = 0) -> float:
        """Advance progress and apply the new LR / WD; returns the LR."""
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
        """Restore progress; the schedule itself comes from the current flags."""
        saved = state.get("config", {})
        changed = {k: (v, getattr(self.config, k)) for k, v in saved.items()
                   if getattr(self.config, k, v) != v}
        if changed:
            print(f" > LR schedule differs from the checkpoint, using the current flags: "
                  f"{ {k: f'{a} -> {b}' for k, (a, b) in changed.items()} }", flush=True)
        self.num_steps = int(state["num_steps"])
        self.num_samples = int(state["num_samples"])
        self.num_tokens = int(state["num_tokens"])
        self.step(0, 0, 0)
