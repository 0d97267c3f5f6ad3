"""RunConfig: everything a run is, typed, versioned and immutable.

Built once, from the command line (``megatron.arguments``: the flags are parsed, checked
and their derived values computed, then :func:`megatron.config_from_flags.run_config_from_flags`
makes this) or from a checkpoint's record (``megatron.checkpointing.record``), and passed
down; nothing below the arguments reads the argparse namespace. Its parts are the configs
the components take: the model's ``TransformerConfig`` (MoE inside it), ``OptimizerConfig``,
the LR ``ScheduleConfig``, ``DataEfficiencyConfig``, and the sections below. A section's
field is named as its flag's ``dest``: ``--save-interval`` is
``config.checkpointing.save_interval``.

Checkpoints store ``to_dict()``: plain data with the schema ``VERSION`` (no class of this
codebase is pickled). ``from_dict`` reads it back; a field a record lacks takes its default,
so adding a field needs no migration, while renaming or re-typing one bumps ``VERSION`` and
adds its step to ``megatron.checkpointing.record``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from megatron.config_dict import from_plain, to_plain
from megatron.core.distributed.fsdp import FSDPConfig
from megatron.data_efficiency.config import DataEfficiencyConfig
from megatron.model.config import TransformerConfig
from megatron.optimizer.optimizer_config import OptimizerConfig
from megatron.optimizer_param_scheduler import ScheduleConfig

VERSION = 1
SCHEMA = "megatron run config"


class FrozenDict(dict):
    """A dict that cannot be changed (``RunConfig.extra``); pickles and copies as one."""

    def _read_only(self, *args, **kwargs):
        raise TypeError("a RunConfig is immutable: build a new one (RunConfig.replace)")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self):
        return FrozenDict, (dict(self),)


@dataclass(frozen=True)
class ParallelConfig:
    """The process layout (sequence parallelism is the model's)."""
    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    num_layers_per_virtual_pipeline_stage: int | None = None
    virtual_pipeline_model_parallel_size: int | None = None   # derived: model chunks per stage
    expert_model_parallel_size: int = 1
    world_size: int = 1                                       # derived: WORLD_SIZE
    rank: int = 0                                             # derived: RANK
    data_parallel_size: int = 1                               # derived
    distributed_backend: str | None = None
    distributed_timeout_minutes: int = 10
    fsdp: FSDPConfig | None = None                            # --use-torch-fsdp2 / ZeRO-2, -3


@dataclass(frozen=True)
class TrainingConfig:
    """Batch, length and stop conditions. The length is kept as given;
    ``megatron.run_plan.plan_run`` is the one source of the steps the run takes."""
    micro_batch_size: int | None = None
    global_batch_size: int | None = None                      # derived default: MBS x DP
    num_microbatches: int | None = None                       # derived
    seq_length: int | None = None
    train_iters: int | None = None
    train_samples: int | None = None
    train_tokens: int | None = None
    seed: int = 1234
    exit_interval: int | None = None
    exit_duration_in_mins: float | None = None
    exit_signal_handler: bool = False


@dataclass(frozen=True)
class DataConfig:
    """Where the samples come from and how they are loaded."""
    data_path: tuple[str, ...] | None = None
    split: str = "969, 30, 1"
    train_data_path: tuple[str, ...] | None = None
    valid_data_path: tuple[str, ...] | None = None
    test_data_path: tuple[str, ...] | None = None
    data_cache_path: str | None = None
    num_workers: int = 2
    dataloader_type: str = "single"
    reset_position_ids: bool = False
    reset_attention_mask: bool = False
    eod_mask_loss: bool = False
    train_doc_idx_path: str | None = None       # Megatron-DeepSpeed's precomputed maps
    train_sample_idx_path: str | None = None
    train_shuffle_idx_path: str | None = None
    train_idx_path: str | None = None


@dataclass(frozen=True)
class TokenizerConfig:
    """The tokenizer and the vocabulary (the padded size is the model's)."""
    tokenizer_type: str | None = None                         # derived default
    vocab_file: str | None = None
    merge_file: str | None = None
    tokenizer_model: str | None = None
    vocab_extra_ids: int = 0
    trust_remote_code: bool = False
    vocab_size: int | None = None                             # --vocab-size (no tokenizer)
    orig_vocab_size: int | None = None                        # derived: the real vocabulary
    make_vocab_size_divisible_by: int = 128


@dataclass(frozen=True)
class EvaluationConfig:
    eval_interval: int = 1000
    eval_iters: int = 100
    eval_full: bool = False


@dataclass(frozen=True)
class LoggingConfig:
    """The human log, TensorBoard, the metrics file and telemetry."""
    log_interval: int = 100
    tensorboard_dir: str | None = None
    tensorboard_log_interval: int = 1
    tensorboard_queue_size: int = 1000
    metrics_file: str | None = None
    log_timers_to_tensorboard: bool = False
    log_batch_size_to_tensorboard: bool = False
    log_optimizer_states_to_tensorboard: bool = False
    log_validation_ppl_to_tensorboard: bool = False
    log_throughput: bool = False
    log_memory_to_tensorboard: bool = False
    log_memory_interval: int | None = None
    peak_tflops: float | None = None
    timing_log_level: int = 0
    timing_log_option: str = "minmax"
    barrier_with_L1_time: bool = True
    wandb_project: str | None = None
    wandb_exp_name: str | None = None
    wandb_save_dir: str | None = None


@dataclass(frozen=True)
class CheckpointConfig:
    """Saving, loading and what a resume may change."""
    save: str | None = None
    load: str | None = None
    save_interval: int | None = None
    ckpt_format: str = "torch"
    async_save: bool = False
    ckpt_convert_format: str | None = None
    ckpt_convert_save: str | None = None
    no_save_optim: bool = False
    no_save_rng: bool = False
    no_load_optim: bool = False
    no_load_rng: bool = False
    finetune: bool = False
    ckpt_fallback: bool = False
    overwrite_checkpoints: bool = False
    override_data_efficiency_state: bool = False
    override_training_data: bool = False
    override_opt_param_scheduler: bool = False


@dataclass(frozen=True)
class RunConfig:
    """A run. ``model.padded_vocab_size`` is None only when the flags were checked without
    a vocabulary (sizing a run, as the analyzer does); ``extra`` holds the entry point's own flags
    (``extra_args_provider``: BERT's, the tasks'); ``model_type`` is the model family a
    checkpoint records (``gpt``, ``bert``); ``flags_from_config`` the notes of flags a
    ``--deepspeed_config`` filled."""
    model: TransformerConfig | None = None      # None: a record without one (never a run)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig | None = None
    data_efficiency: DataEfficiencyConfig = field(default_factory=DataEfficiencyConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpointing: CheckpointConfig = field(default_factory=CheckpointConfig)
    model_type: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    flags_from_config: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra", FrozenDict(self.extra))

    def replace(self, **changes) -> "RunConfig":
        """A new config with top-level parts replaced (this one is never changed)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The record a checkpoint stores: plain data with the schema version."""
        return {"schema": SCHEMA, "version": VERSION, **to_plain(self)}

    @classmethod
    def from_dict(cls, record: Mapping) -> "RunConfig":
        """Read ``to_dict``'s record of this ``VERSION`` (an older one: the checkpoint
        package migrates it first, ``megatron.checkpointing.record``).

        Raises:
            ValueError: another version, or a field this code does not know.
        """
        if record.get("version") != VERSION:
            raise ValueError(f"run config version {record.get('version')!r}; this code reads "
                             f"version {VERSION}")
        body = {k: v for k, v in record.items() if k not in ("schema", "version")}
        return from_plain(cls, body, "run config")
