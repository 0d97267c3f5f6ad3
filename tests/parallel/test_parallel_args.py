"""Parallel-layout flags: interleaving (--num-layers-per-virtual-pipeline-stage) is derived
and checked as Megatron does; --use-distributed-optimizer trains with --fp16; random-LTD with
sequence parallelism is refused at validation."""
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


def _fp16_worker(rank, world_size):
    from tests.training.helpers import run_tiny
    state = run_tiny(*FP16, "--use-distributed-optimizer", iters=4)
    return state.history


# SGD without clipping: the update is proportional to the unscaled gradient, so a wrong
# loss-scale handling shows in the losses (Adam would hide it).
FP16 = ("--fp16", "--hidden-dropout", "0", "--attention-dropout", "0", "--eval-iters", "0",
        "--initial-loss-scale", "4096", "--optimizer", "sgd", "--clip-grad", "0",
        "--lr", "0.05")


def two_rank_jobs(tmp_path_factory) -> dict:
    """This module's job in the session's shared 2-rank spawn (tests/conftest.py)."""
    return {"fp16_distopt": (_fp16_worker,)}


def test_distributed_optimizer_trains_under_fp16(two_rank_spawn):
    """ZeRO-1 with fp16 loss scaling on 2 DP ranks trains as one process with the plain
    fp16 optimizer: same losses step by step (fp32 main params on both sides)."""
    from tests.training.helpers import run_tiny
    reference = run_tiny(*FP16, iters=4).history
    results = two_rank_spawn["fp16_distopt"]
    assert [it for it, _ in reference] == [1, 2, 3, 4]
    assert reference[-1][1] < reference[0][1]                 # it learns
    for history in results:
        assert [it for it, _ in history] == [1, 2, 3, 4]
        assert [l for _, l in history] == pytest.approx([l for _, l in reference], rel=2e-3)


def test_random_ltd_with_sequence_parallel_is_refused_by_validate_args(monkeypatch):
    with pytest.raises(ArgumentValidationError, match="--sequence-parallel"):
        _validate(monkeypatch, 2, "--tensor-model-parallel-size", "2", "--sequence-parallel",
                  "--random-ltd", "--random-ltd-min-seqlen", "8",
                  "--random-ltd-total-steps", "5")
    args = _validate(monkeypatch, 2, "--tensor-model-parallel-size", "2",
                     "--random-ltd", "--random-ltd-min-seqlen", "8",
                     "--random-ltd-total-steps", "5")
    assert args.data_efficiency.random_ltd.enabled and not args.sequence_parallel
