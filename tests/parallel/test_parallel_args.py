"""Parallel-layout flags: interleaving (--num-layers-per-virtual-pipeline-stage) is derived
and checked as Megatron does; --use-distributed-optimizer is accepted with --fp16."""
import pytest

from megatron.arguments import ArgumentValidationError, parse_args, validate_args

BASE = ["--num-layers", "8", "--hidden-size", "32", "--num-attention-heads", "4",
        "--seq-length", "16", "--micro-batch-size", "1", "--lr", "1e-3", "--vocab-size", "64",
        "--train-iters", "2"]


def _validate(monkeypatch, world_size: int, *extra: str):
    monkeypatch.setenv("WORLD_SIZE", str(world_size))
    return validate_args(parse_args(args=BASE + list(extra)))


def test_virtual_pipeline_size_is_derived(monkeypatch):
    args = _validate(monkeypatch, 2, "--pipeline-model-parallel-size", "2",
                     "--num-layers-per-virtual-pipeline-stage", "2", "--global-batch-size", "4")
    assert args.virtual_pipeline_model_parallel_size == 2      # 8 layers / 2 stages / 2
    assert _validate(monkeypatch, 2, "--pipeline-model-parallel-size",
                     "2").virtual_pipeline_model_parallel_size is None


@pytest.mark.parametrize("extra, message", [
    (["--pipeline-model-parallel-size", "2", "--num-layers-per-virtual-pipeline-stage", "3",
      "--global-batch-size", "4"], "must divide the layers per pipeline stage"),
    (["--pipeline-model-parallel-size", "2", "--num-layers-per-virtual-pipeline-stage", "2",
      "--global-batch-size", "3"], "multiple of --pipeline-model-parallel-size (2)"),
    (["--num-layers-per-virtual-pipeline-stage", "2"], "--pipeline-model-parallel-size >= 2"),
])
def test_bad_interleaving_is_rejected(monkeypatch, extra, message):
    world = 2 if "--pipeline-model-parallel-size" in extra else 1
    with pytest.raises(ArgumentValidationError) as info:
        _validate(monkeypatch, world, *extra)
    assert message in str(info.value)


def test_distributed_optimizer_accepts_fp16(monkeypatch):
    args = _validate(monkeypatch, 2, "--use-distributed-optimizer", "--fp16")
    assert args.use_distributed_optimizer and args.fp16
