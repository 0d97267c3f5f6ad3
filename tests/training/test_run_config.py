"""The typed run config: built once from the flags, immutable, stored in checkpoints as
plain versioned data that reads back to the same config; other versions are refused."""
from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch

from megatron.arguments import run_config
from megatron.checkpointing.record import migrate_args_record, saved_run_config
from megatron.errors import CheckpointError
from megatron.run_config import VERSION, RunConfig

FLAGS = ["--num-layers", "4", "--hidden-size", "32", "--num-attention-heads", "4",
         "--seq-length", "16", "--micro-batch-size", "2", "--global-batch-size", "4",
         "--train-tokens", "6400", "--lr", "1e-3", "--lr-warmup-fraction", "0.1",
         "--vocab-size", "60", "--make-vocab-size-divisible-by", "8", "--bf16",
         "--num-experts", "2", "--expert-interval", "2", "--normalization", "RMSNorm",
         "--swiglu", "--position-embedding-type", "rope", "--group-query-attention",
         "--num-query-groups", "2", "--data-efficiency-curriculum-learning",
         "--curriculum-metric", "seqtru", "--curriculum-min-difficulty", "8",
         "--curriculum-max-difficulty", "16", "--curriculum-total-steps", "4",
         "--curriculum-difficulty-step", "8", "--random-ltd", "--random-ltd-min-seqlen", "8",
         "--random-ltd-total-steps", "4", "--random-ltd-seq-per-step", "8",
         "--data-path", "a", "b", "--save", "out", "--save-interval", "5"]


def test_flags_land_in_typed_sections_and_round_trip_as_plain_data():
    config = run_config(FLAGS)
    assert config.model.padded_vocab_size == 64 and config.tokenizer.orig_vocab_size == 60
    assert config.model.moe.num_experts == 2 and config.model.moe.moe_layer_ids == {1, 3}
    assert config.model.num_query_groups == 2 and config.model.normalization == "RMSNorm"
    assert config.training.train_tokens == 6400 and config.training.train_iters is None
    assert config.data.data_path == ("a", "b") and config.checkpointing.save_interval == 5
    assert config.schedule.unit == "tokens" and config.optimizer.bf16
    assert config.data_efficiency.curriculum.enabled and config.data_efficiency.random_ltd.enabled
    record = config.to_dict()
    assert record["version"] == VERSION
    plain = json.loads(json.dumps(record))      # no class of this codebase in the record
    assert RunConfig.from_dict(plain) == config


def test_config_is_immutable_and_replace_makes_a_new_one():
    config = run_config(FLAGS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.training = None
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.training.seed = 1
    with pytest.raises(TypeError, match="immutable"):
        config.extra["x"] = 1
    assert config.replace(model_type="gpt").model_type == "gpt" and config.model_type is None


def test_every_part_of_the_config_at_every_depth_is_frozen():
    """Not only the top: the model, MoE, curriculum metrics and their schedules, random-LTD."""
    seen = []

    def walk(value, where):
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            assert type(value).__dataclass_params__.frozen, f"{where}: {type(value).__name__}"
            seen.append(type(value).__name__)
            for f in dataclasses.fields(value):
                walk(getattr(value, f.name), f"{where}.{f.name}")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]")

    walk(run_config(FLAGS), "config")
    assert {"TransformerConfig", "MoEConfig", "DataEfficiencyConfig", "CurriculumConfig",
            "CurriculumMetricConfig", "ScheduleConfig", "RandomLTDConfig",
            "DynamicBatchingConfig"} <= set(seen)


def test_a_record_of_another_version_or_schema_is_refused_naming_the_file():
    record = run_config(FLAGS).to_dict()
    with pytest.raises(CheckpointError, match=r"f\.pt: .*version 2 is newer"):
        saved_run_config({"run_config": {**record, "version": VERSION + 1}}, "f.pt")
    with pytest.raises(CheckpointError, match=r"f\.pt: .*has no field\(s\) \['nope'\]"):
        saved_run_config({"run_config": {**record, "nope": 1}}, "f.pt")
    assert saved_run_config({"run_config": None, "args": None}, "f.pt") is None


def test_an_old_namespace_record_migrates_with_its_entry_points_flags():
    """A checkpoint of the code before the run config (tests/fixtures/old_format) recorded
    the namespace: its flags fill the sections, BERT's own flags land in ``extra``, flags
    added since take their defaults, and an estimated step count is no stop condition."""
    path = os.path.join(os.path.dirname(__file__), os.pardir, "fixtures", "old_format",
                        "gpt_tp1", "iter_0000003", "mp_rank_00", "model_optim_rng.pt")
    saved = torch.load(path, weights_only=False)["args"]
    config = migrate_args_record({**saved, "model_type": "bert", "bert_binary_head": False,
                                  "train_tokens": 384, "train_iters_is_stop": False})
    assert config.extra["bert_binary_head"] is False and config.model_type == "bert"
    assert (config.model.num_layers, config.model.padded_vocab_size) == (4, 64)
    assert config.model.normalization == "LayerNorm" and config.tokenizer.orig_vocab_size == 60
    assert config.training.train_iters is None and config.training.train_tokens == 384
    assert config.data_efficiency.random_ltd.enabled


def test_initialize_returns_the_config_and_keeps_get_args_for_users_scripts():
    from megatron.arguments import get_args
    from megatron.initialize import get_run_config, initialize_megatron
    config = initialize_megatron(argv=FLAGS)
    assert get_run_config() is config and config == run_config(FLAGS)
    assert get_args().save_interval == config.checkpointing.save_interval == 5
