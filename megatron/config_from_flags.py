"""Validated flags -> ``RunConfig``: the one place a flag becomes a config field.

The flags come as a mapping of ``dest`` names to values: the command line's after
``megatron.arguments.validate_args`` (every derived value on it), or the record an older
checkpoint kept of its run (``megatron.checkpointing.record``). A flag the mapping lacks
(one added after the checkpoint was written) takes its field's default, which is the
flag's default. Sections whose field names are the flags' ``dest`` names are filled by
name; the model, optimizer and schedule builders below map the flags named otherwise.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from megatron.core.distributed.fsdp import FSDPConfig
from megatron.data_efficiency.config import DataEfficiencyConfig
from megatron.model.config import TransformerConfig
from megatron.model.moe.flags import moe_config_from_flags
from megatron.optimizer.optimizer_config import OptimizerConfig
from megatron.optimizer_param_scheduler import ScheduleConfig, build_schedule_config
from megatron.run_config import (CheckpointConfig, DataConfig, EvaluationConfig, LoggingConfig,
                                 ParallelConfig, RunConfig, TokenizerConfig, TrainingConfig)

# TransformerConfig field <- flag, where the names differ
_MODEL_RENAMES = {"rope_scaling": "use_rope_scaling", "vocab_size": "orig_vocab_size"}
# TransformerConfig fields built below (not copied from one flag of the same name)
_MODEL_BUILT = {"moe", "padded_vocab_size", "rope_scaling_factor"}


def _by_name(cls, flags: Mapping, skip: frozenset[str] = frozenset(), **given):
    """``cls`` from the flags of the same names (lists of paths as tuples)."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in skip or f.name in given or f.name not in flags:
            continue
        value = flags[f.name]
        values[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values, **given)


def transformer_config_from_flags(flags: Mapping) -> TransformerConfig:
    """The model's ``TransformerConfig``."""
    given = {field: flags[flag] for field, flag in _MODEL_RENAMES.items()
             if flags.get(flag) is not None}
    return _by_name(TransformerConfig, flags, frozenset(_MODEL_BUILT | set(_MODEL_RENAMES)),
                    moe=moe_config_from_flags(flags),
                    padded_vocab_size=flags.get("padded_vocab_size"),   # None: not known yet
                    rope_scaling_factor=flags.get("rope_scaling_factor") or 8.0, **given)


def optimizer_config_from_flags(flags: Mapping) -> OptimizerConfig:
    return _by_name(OptimizerConfig, flags)


def schedule_config_from_flags(flags: Mapping) -> ScheduleConfig:
    """The LR schedule with warmup and decay in one unit."""
    def first(pairs):
        return next(((flags[name], unit) for name, unit in pairs
                     if flags.get(name) is not None), None)
    if flags.get("lr_warmup_fraction") is not None:
        warmup = (flags["lr_warmup_fraction"], "fraction")
    else:
        warmup = first((("lr_warmup_iters", "steps"), ("lr_warmup_samples", "samples"),
                        ("lr_warmup_tokens", "tokens"))) or (0, "steps")
    # decay over the whole run by default, in the unit the run is measured in
    decay = first((("lr_decay_iters", "steps"), ("lr_decay_samples", "samples"),
                   ("lr_decay_tokens", "tokens"))) or first(
        (("train_samples", "samples"), ("train_tokens", "tokens"), ("train_iters", "steps")))
    return build_schedule_config(
        max_lr=flags["lr"], min_lr=flags.get("min_lr", 0.0),
        decay_style=flags.get("lr_decay_style", "linear"), warmup=warmup, decay=decay,
        samples_per_step=flags["global_batch_size"], tokens_per_sample=flags["seq_length"],
        weight_decay=flags.get("weight_decay", 0.01))


def fsdp_config_from_flags(flags: Mapping) -> FSDPConfig | None:
    """FSDP2's sharding (``--use-torch-fsdp2`` or ZeRO stage 2 / 3); None without it."""
    if not flags.get("use_torch_fsdp2"):
        return None
    return FSDPConfig(reshard_after_forward=flags.get("zero_stage") != 2,
                      param_dtype=flags["params_dtype"] if flags.get("bf16") else None)


def run_config_from_flags(flags: Mapping, extra_flags: tuple[str, ...] = ()) -> RunConfig:
    """The ``RunConfig`` of validated flags; ``extra_flags`` name the entry point's own
    (kept in ``RunConfig.extra``)."""
    return RunConfig(
        model=transformer_config_from_flags(flags),
        parallel=_by_name(ParallelConfig, flags, fsdp=fsdp_config_from_flags(flags)),
        training=_by_name(TrainingConfig, flags), data=_by_name(DataConfig, flags),
        tokenizer=_by_name(TokenizerConfig, flags),
        optimizer=optimizer_config_from_flags(flags),
        schedule=schedule_config_from_flags(flags) if flags.get("lr") is not None else None,
        data_efficiency=flags.get("data_efficiency") or DataEfficiencyConfig(),
        evaluation=_by_name(EvaluationConfig, flags), logging=_by_name(LoggingConfig, flags),
        checkpointing=_by_name(CheckpointConfig, flags), model_type=flags.get("model_type"),
        extra={k: flags[k] for k in extra_flags if k in flags},
        flags_from_config=tuple(flags.get("flags_from_config") or ()))
