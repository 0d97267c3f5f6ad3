"""Flag validation: bad combinations fail at start with messages naming the flags."""
import json

import pytest

from megatron.arguments import ArgumentValidationError, parse_args, validate_args

BASE = ["--num-layers", "4", "--hidden-size", "64", "--num-attention-heads", "4",
        "--seq-length", "32", "--micro-batch-size", "2", "--lr", "1e-3", "--vocab-size", "100"]


def _validate(*extra):
    return validate_args(parse_args(args=BASE + list(extra)))


@pytest.mark.parametrize("extra, flags", [
    (["--train-iters", "10", "--train-samples", "100"], ["--train-iters", "--train-samples"]),
    (["--train-iters", "10", "--fp16", "--bf16"], ["--fp16", "--bf16"]),
    (["--train-iters", "10", "--lr-warmup-iters", "5", "--lr-warmup-fraction", "0.1"],
     ["--lr-warmup-iters", "--lr-warmup-fraction"]),
    (["--train-tokens", "1000", "--lr-decay-iters", "5", "--lr-decay-tokens", "100"],
     ["--lr-decay-iters", "--lr-decay-tokens"]),
    (["--train-iters", "10", "--max-position-embeddings", "16"],
     ["--seq-length", "--max-position-embeddings"]),
    (["--train-iters", "10", "--num-attention-heads", "5"],
     ["--hidden-size", "--num-attention-heads"]),
    (["--train-iters", "10", "--global-batch-size", "3"],
     ["--global-batch-size", "--micro-batch-size"]),
    ([], ["--train-iters", "--train-samples", "--train-tokens"]),
    (["--train-iters", "10", "--min-lr", "1"], ["--min-lr", "--lr"]),
    (["--train-iters", "10", "--lr-warmup-iters", "20"], ["--lr-warmup-", "--lr-decay-"]),
    (["--train-iters", "10", "--recompute-method", "uniform"],
     ["--recompute-method", "--recompute-granularity"]),
])
def test_errors_name_the_flags(extra, flags):
    with pytest.raises(ArgumentValidationError) as info:
        _validate(*extra)
    for flag in flags:
        assert flag in str(info.value)


def test_every_problem_reported_at_once():
    with pytest.raises(ArgumentValidationError) as info:
        _validate("--fp16", "--bf16", "--train-iters", "1", "--train-samples", "5")
    msg = str(info.value)
    assert "--fp16" in msg and "--train-samples" in msg


def test_world_size_divisibility(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "6")
    with pytest.raises(ArgumentValidationError, match="--tensor-model-parallel-size"):
        _validate("--train-iters", "10", "--tensor-model-parallel-size", "4")


def test_derived_values(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "8")
    args = _validate("--train-samples", "1000", "--tensor-model-parallel-size", "2",
                     "--global-batch-size", "16", "--position-embedding-type", "rope",
                     "--max-position-embeddings", "8")
    assert args.data_parallel_size == 4
    assert args.num_microbatches == 2          # 16 / (2 x 4)
    assert args.ffn_hidden_size == 256 and args.kv_channels == 16
    from megatron.arguments import run_config_from_args
    from megatron.run_plan import plan_run
    # ceil(1000 / 16), for display and sizing
    assert plan_run(run_config_from_args(args)).nominal_train_iters == 63
    assert args.train_iters is None            # the run plan is the one source of run length
    swiglu = _validate("--train-iters", "1", "--swiglu")
    assert swiglu.ffn_hidden_size == 128       # 2/3 * 4h rounded down to 64
    assert _validate("--train-iters", "1").global_batch_size == 2 * 8


def test_rope_allows_longer_sequences_than_position_table():
    args = _validate("--train-iters", "1", "--position-embedding-type", "rope",
                     "--max-position-embeddings", "16")
    assert args.seq_length == 32


def test_model_config_and_flags_agree_on_the_swiglu_width():
    from megatron.arguments import transformer_config_from_args
    from megatron.model.config import TransformerConfig
    for h in (64, 96, 1024):
        args = _validate("--train-iters", "1", "--swiglu", "--hidden-size", str(h))
        direct = TransformerConfig(num_layers=4, hidden_size=h, num_attention_heads=4,
                                   padded_vocab_size=128, max_position_embeddings=32,
                                   swiglu=True)
        assert transformer_config_from_args(args).ffn_hidden_size == direct.ffn_hidden_size \
            == args.ffn_hidden_size


def test_validation_is_the_last_writer_of_args():
    """validate_args derives everything (vocabulary padding, the data-efficiency config);
    sizing the run afterwards reads its config and writes nothing."""
    from megatron.arguments import run_config_from_args
    from megatron.run_plan import plan_run
    args = _validate("--train-tokens", "6400", "--random-ltd", "--random-ltd-min-seqlen", "8",
                     "--random-ltd-total-steps", "50", "--random-ltd-seq-per-step", "8")
    assert args.padded_vocab_size == 128 and args.data_efficiency.random_ltd.enabled
    before = dict(vars(args))
    config = run_config_from_args(args)
    run = plan_run(config)
    assert vars(args) == before and config == run_config_from_args(args)
    assert run.nominal_train_iters == 6400 // (2 * 32) and args.train_iters is None
    assert run.train_iters > run.nominal_train_iters          # dropping steps count less
    assert run.train_valid_test_num_samples[0] == run.train_iters * 2


def test_cyclic_dataloader_cannot_be_combined_with_the_curriculum_sampler(tmp_path):
    with pytest.raises(ArgumentValidationError, match="--dataloader-type cyclic"):
        _validate("--train-iters", "5", "--dataloader-type", "cyclic",
                  "--data-efficiency-curriculum-learning", "--curriculum-metric", "voc",
                  "--curriculum-index-path", str(tmp_path), "--curriculum-min-difficulty", "1",
                  "--curriculum-max-difficulty", "100", "--curriculum-total-steps", "5")


def test_cyclic_dataloader_cannot_be_combined_with_dynamic_batching(tmp_path):
    """Refused by the flag checks, before any dataset is built (not when the training
    loader is made, after the datasets)."""
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"data_efficiency": {"enabled": True, "data_sampling": {
        "dynamic_batching": {"enabled": True, "max_tokens": 64,
                             "metrics_path": str(tmp_path)}}}}))
    with pytest.raises(ArgumentValidationError,
                       match="--dataloader-type cyclic: dynamic_batching's") as info:
        _validate("--train-iters", "5", "--dataloader-type", "cyclic",
                  "--data-efficiency-config", str(config))
    assert "leave --dataloader-type single" in str(info.value)
