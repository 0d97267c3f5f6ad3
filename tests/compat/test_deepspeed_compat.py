"""Megatron-DeepSpeed's flags and DeepSpeed config top level (megatron/deepspeed_compat.py),
the data_efficiency keys DeepSpeed reads differently from a plain reading, and the two stop
conditions (--train-tokens beside --train-iters / --train-samples)."""
import copy
import json
import os

import numpy as np
import pytest

from megatron.arguments import (ArgumentValidationError, parse_args, run_config,
                                run_config_from_args, validate_args)
from megatron.core.enums import ModelType
from megatron.data_efficiency.analyzer import deepspeed_index as dsi
from megatron.data_efficiency.runtime import build_sampler
from megatron.run_plan import plan_run

BASE = ["--num-layers", "4", "--hidden-size", "32", "--num-attention-heads", "2",
        "--seq-length", "64", "--micro-batch-size", "2", "--global-batch-size", "4",
        "--lr", "1e-3", "--vocab-size", "100", "--num-workers", "0", "--log-interval", "10"]

DS = {"train_batch_size": 4, "train_micro_batch_size_per_gpu": 2, "steps_per_print": 10,
      "zero_optimization": {"stage": 1}, "gradient_clipping": 1.0, "prescale_gradients": False,
      "fp16": {"enabled": True, "loss_scale": 0, "loss_scale_window": 500, "hysteresis": 2,
               "min_loss_scale": 1, "initial_scale_power": 11},
      "wall_clock_breakdown": False, "dataloader_drop_last": True,
      "data_efficiency": {"enabled": True, "seed": 99, "data_routing": {
          "enabled": True, "random_ltd": {
              "enabled": True, "total_layer_num": 4, "random_ltd_layer_num": 2,
              "random_ltd_layer_id": [1, 2], "model_mask_name": "attention_mask",
              "model_type": "decoder", "hidden_state_order": "seq_batch_dim",
              "random_ltd_schedule": {"min_value": 16, "max_value": 64,
                                      "schedule_type": "fixed_linear",
                                      "schedule_config": {"require_steps": 10,
                                                          "seq_per_step": 16}}}}}}


def _validate(tmp_path, ds=None, *extra):
    argv = BASE + ["--train-iters", "10"] + list(extra)
    if ds is not None:
        path = tmp_path / "ds_config.json"
        path.write_text(json.dumps(ds))
        argv += ["--deepspeed", "--deepspeed_config", str(path)]
    return validate_args(parse_args(args=argv))


def _refused(tmp_path, ds, *extra) -> str:
    with pytest.raises(ArgumentValidationError) as info:
        _validate(tmp_path, ds, *extra)
    return str(info.value)


def _with(**changes):
    d = copy.deepcopy(DS)
    for path, value in changes.items():
        *parents, key = path.split("__")
        target = d
        for k in parents:
            target = target[k]
        target[key] = value
    return d


def test_recipe_shaped_config_is_read(tmp_path):
    args = _validate(tmp_path, DS, "--fp16", "--zero-stage", "1", "--random-ltd",
                     "--checkpoint-activations", "--deepspeed-activation-checkpointing",
                     "--no-pipeline-parallel", "--data-impl", "mmap")
    assert args.use_distributed_optimizer                       # ZeRO-1
    assert (args.recompute_granularity, args.recompute_method, args.recompute_num_layers) == \
        ("full", "uniform", 1)
    assert args.initial_loss_scale == 2.0 ** 11 and args.loss_scale_window == 500
    assert args.loss_scale is None and args.min_loss_scale == 1.0 and args.hysteresis == 2
    assert any(n.startswith("--loss-scale-window 500 from --deepspeed_config")
               and "fp16.loss_scale_window" in n for n in args.flags_from_config)
    cfg = args.data_efficiency
    assert cfg.seed == 99 and cfg.random_ltd.enabled and cfg.random_ltd.layer_ids == (1, 2)


def test_defaults_without_a_deepspeed_config(tmp_path):
    args = _validate(tmp_path)
    assert (args.initial_loss_scale, args.loss_scale_window, args.min_loss_scale,
            args.hysteresis) == (2.0 ** 32, 1000, 1.0, 2)
    assert not args.use_distributed_optimizer and args.data_efficiency.seed == args.seed


@pytest.mark.parametrize("ds, extra, named", [
    (_with(train_batch_size=8), ["--fp16"], ["train_batch_size 8", "--global-batch-size 4"]),
    (_with(train_micro_batch_size_per_gpu=1), ["--fp16"],
     ["train_micro_batch_size_per_gpu 1", "--micro-batch-size 2"]),
    (_with(gradient_clipping=0.5), ["--fp16", "--clip-grad", "1.0"],
     ["gradient_clipping 0.5", "--clip-grad 1.0"]),
    (_with(steps_per_print=1), ["--fp16"], ["steps_per_print 1", "--log-interval 10"]),
    (_with(fp16__enabled=False), ["--fp16"], ["fp16.enabled False", "--fp16 True"]),
    (_with(bf16={"enabled": False}), ["--bf16"], ["bf16.enabled False", "--bf16 True"]),
    (DS, ["--fp16", "--loss-scale-window", "100"],
     ["fp16.loss_scale_window 500", "--loss-scale-window 100"]),
    (DS, ["--fp16", "--initial-loss-scale", "65536"],
     ["fp16.initial_scale_power 11", "--initial-loss-scale 65536"]),
    (DS, ["--fp16", "--loss-scale", "8"], ["fp16.loss_scale 0 (dynamic)", "--loss-scale 8"]),
    (DS, ["--fp16", "--zero-stage", "0"], ["--zero-stage 0", "zero_optimization.stage 1"]),
    (_with(zero_optimization__stage=2), ["--fp16"], ["ZeRO stage 2"]),
    (_with(wall_clock_breakdown=True), ["--fp16"], ["wall_clock_breakdown"]),
    (_with(dataloader_drop_last=False), ["--fp16"], ["dataloader_drop_last"]),
    (_with(optimizer={"type": "Adam"}), ["--fp16"], ["optimizer: unknown key"]),
    (DS, ["--fp16", "--data-efficiency-config", "x.json"],
     ["--deepspeed_config", "--data-efficiency-config"]),
    (DS, ["--fp16", "--pipeline-model-parallel-size", "2", "--no-pipeline-parallel"],
     ["--no-pipeline-parallel", "--pipeline-model-parallel-size 2"]),
])
def test_contradictions_name_both(tmp_path, ds, extra, named):
    msg = _refused(tmp_path, ds, *extra)
    for text in named:
        assert text in msg, msg


def test_explicit_flag_beats_config_value_beats_default(tmp_path, capsys):
    """Only a flag the user gave can contradict the JSON; a flag left at its default takes
    the JSON's value, and the start-up log says which one applied."""
    base = BASE[:BASE.index("--global-batch-size")] + BASE[BASE.index("--lr"):-2]
    assert "--log-interval" not in base and "--global-batch-size" not in base
    ds = _with(steps_per_print=7, gradient_clipping=0.5, train_batch_size=8,
               gradient_accumulation_steps=4)
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(ds))
    argv = base + ["--train-iters", "10", "--deepspeed", "--deepspeed_config", str(path)]
    args = validate_args(parse_args(args=argv))                    # no --fp16 either
    assert (args.log_interval, args.clip_grad, args.global_batch_size, args.fp16) == \
        (7, 0.5, 8, True)
    assert args.num_microbatches == 4                              # 8 / (2 x 1 rank)
    notes = "\n".join(args.flags_from_config)
    for text in ("--log-interval 7 from --deepspeed_config", "steps_per_print",
                 "--clip-grad 0.5", "--global-batch-size 8", "--fp16 True",
                 "(--log-interval not given)"):
        assert text in notes, notes
    # the same values given as flags are no contradiction; other values are, naming both
    same = validate_args(parse_args(args=argv + ["--log-interval", "7", "--clip-grad", "0.5"]))
    assert "--log-interval" not in "\n".join(same.flags_from_config)
    with pytest.raises(ArgumentValidationError, match="steps_per_print 7 contradicts "
                                                      "--log-interval 100"):
        validate_args(parse_args(args=argv + ["--log-interval", "100"]))   # = the default
    # without a config nothing is noted, and the parser's defaults stay
    plain = _validate(tmp_path)
    assert not getattr(plain, "flags_from_config", ()) and plain.clip_grad == 1.0


def test_data_sampling_num_workers_beats_only_the_default(tmp_path):
    ds = _with(data_efficiency__data_sampling={"enabled": False, "num_workers": 3})
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(ds))
    i = BASE.index("--num-workers")
    base = BASE[:i] + BASE[i + 2:]
    args = validate_args(parse_args(args=base + ["--train-iters", "10", "--fp16",
                                                 "--deepspeed_config", str(path)]))
    assert args.num_workers == 3 and args.data_efficiency.num_workers == 3
    assert any("--num-workers 3 from --deepspeed_config" in n and "data_sampling.num_workers" in n
               for n in args.flags_from_config)
    msg = _refused(tmp_path, ds, "--fp16", "--num-workers", "2")   # given, even = default
    assert "data_sampling.num_workers 3 contradicts --num-workers 2" in msg


def test_flags_without_their_partner_are_refused(tmp_path):
    assert "--deepspeed_config" in _refused(tmp_path, None, "--deepspeed")
    assert "--checkpoint-activations" in _refused(tmp_path, None,
                                                  "--deepspeed-activation-checkpointing")
    msg = _refused(tmp_path, None, "--train-doc-idx-path", "d.npy")
    assert "--train-sample-idx-path" in msg and "--train-shuffle-idx-path" in msg
    assert "--recompute-granularity selective" in _refused(
        tmp_path, None, "--checkpoint-activations", "--recompute-granularity", "selective")


@pytest.mark.parametrize("change, named", [
    ({"data_efficiency__data_routing__random_ltd__total_layer_num": 24},
     "total_layer_num 24 contradicts --num-layers 4"),
    ({"data_efficiency__data_routing__random_ltd__layer_token_lr_schedule": {"enabled": True}},
     "layer_token_lr_schedule.enabled"),
    ({"data_efficiency__data_sampling": {"enabled": False, "num_workers": 2}},
     "data_sampling.num_workers 2 contradicts --num-workers 0"),
    ({"data_efficiency__data_sampling": {"enabled": False, "num_epochs": 0}},
     "data_sampling.num_epochs=0: expected a number > 0"),
])
def test_data_efficiency_keys_checked(tmp_path, change, named):
    msg = _refused(tmp_path, _with(**change), "--fp16")
    assert named in msg, msg


def test_data_efficiency_keys_as_deepspeed(tmp_path):
    # DeepSpeed's engine reads random_ltd.enabled alone, not data_routing.enabled
    args = _validate(tmp_path, _with(data_efficiency__data_routing__enabled=False), "--fp16")
    assert args.data_efficiency.random_ltd.enabled
    args = _validate(tmp_path, _with(data_efficiency__data_sampling={
        "enabled": False, "num_workers": 0, "pin_memory": True}), "--fp16")
    assert args.data_efficiency.num_workers == 0
    msg = _refused(tmp_path, DS, "--fp16", "--random-ltd", "--random-ltd-total-steps", "5")
    assert "--random-ltd-total-steps" in msg and "give it in one place" in msg


def _ds_index(folder, values):
    os.makedirs(folder, exist_ok=True)
    uniq = np.unique(values)
    prefix = os.path.join(folder, "voc")
    dsi.write_deepspeed_rows(prefix + dsi.SAMPLE_SUFFIX, [np.flatnonzero(values == v) for v in uniq],
                             np.uint16)
    dsi.write_deepspeed_rows(prefix + dsi.METRIC_SUFFIX, [[v] for v in uniq], np.uint16)
    return prefix


def test_deepspeed_index_is_read_directly_and_its_count_checked(tmp_path):
    values = np.arange(40) % 7 * 100
    prefix = _ds_index(str(tmp_path / "analysis"), values)
    ds = _with(data_efficiency__data_sampling={"enabled": True, "curriculum_learning": {
        "enabled": True, "curriculum_metrics": {"voc": {
            "index_to_sample_path": prefix + dsi.SAMPLE_SUFFIX,
            "index_to_metric_path": prefix + dsi.METRIC_SUFFIX, "difficulty_type": "percentile",
            "clustering_type": "schedule_based", "min_difficulty": 10, "max_difficulty": 100,
            "schedule_type": "fixed_root", "schedule_config": {
                "total_curriculum_step": 5, "difficulty_step": 1, "root_degree": 2}}}}})
    args = _validate(tmp_path, ds, "--fp16")
    cfg = args.data_efficiency.curriculum
    difficulties = plan_run(run_config_from_args(args)).planner.difficulties
    sampler = build_sampler(cfg, difficulties, 4, 2, 0, 1, seed=99, num_samples=40)
    np.testing.assert_array_equal(sampler.metrics[0].index.sample_to_metric, values)
    with pytest.raises(ValueError, match="describes 40 samples but the training dataset has 41"):
        build_sampler(cfg, difficulties, 4, 2, 0, 1, seed=99, num_samples=41)
    bad = copy.deepcopy(ds)
    bad["data_efficiency"]["data_sampling"]["curriculum_learning"]["curriculum_metrics"]["voc"][
        "index_to_metric_path"] = str(tmp_path / "nowhere_index_to_metric")
    assert "nowhere_index_to_sample.idx" in _refused(tmp_path, bad, "--fp16")


@pytest.mark.parametrize("stop, expected_steps, sized_steps", [
    (["--train-iters", "10", "--train-tokens", str(4 * 64 * 3)], 3, 10),   # tokens first
    (["--train-iters", "3", "--train-tokens", str(4 * 64 * 10)], 3, 10),   # iterations first
    (["--train-samples", "12", "--train-tokens", str(4 * 64 * 10)], 3, 10),
    (["--train-tokens", str(4 * 64 * 3)], 3, 3),
])
def test_two_stop_conditions_first_wins_sized_for_larger(stop, expected_steps, sized_steps):
    run = plan_run(run_config(BASE + ["--eval-iters", "0"] + stop), ModelType.encoder_or_decoder)
    assert run.train_iters == expected_steps
    assert run.train_valid_test_num_samples[0] == sized_steps * 4


def test_train_iters_with_train_samples_still_refused():
    with pytest.raises(ArgumentValidationError, match="--train-iters.*--train-samples"):
        validate_args(parse_args(args=BASE + ["--train-iters", "3", "--train-samples", "12"]))


def test_data_efficiency_seed_seeds_the_run(tmp_path):
    """DeepSpeed seeds its data sampler with data_efficiency.seed, not --seed."""
    from megatron.training_setup import build_data_efficiency_runtime
    args = _validate(tmp_path, DS, "--fp16", "--seed", "5")
    run = plan_run(run_config_from_args(args), ModelType.encoder_or_decoder)
    runtime = build_data_efficiency_runtime(run.planner)
    assert runtime.shape.seed == 99
    assert _validate(tmp_path, None, "--seed", "5").data_efficiency.seed == 5


def test_random_ltd_model_type_must_be_the_model(tmp_path):
    from megatron.training_setup import build_data_efficiency_runtime
    args = _validate(tmp_path, DS, "--fp16")
    with pytest.raises(ValueError, match="model_type 'decoder' contradicts the bert model"):
        build_data_efficiency_runtime(plan_run(run_config_from_args(args),
                                               ModelType.encoder).planner)
