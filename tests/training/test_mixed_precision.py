"""Mixed precision as Megatron does it: every parameter's gradient accumulates in one
contiguous fp32 main-grad buffer (under --bf16, or --fp16 with
--accumulate-allreduce-grads-in-fp32), fp32 master weights are stepped and, after a load
without optimizer state, refreshed from the loaded weights; a bf16 run on the CPU tracks
the fp32 run's loss curve."""
import numpy as np
import pytest
import torch

from megatron.arguments import ArgumentValidationError, parse_args, validate_args
from megatron.optimizer import OptimizerConfig, get_megatron_optimizer
from tests.training.helpers import run_tiny

# Measured on this tiny GPT (40 steps, rope): the bf16 curve is within 0.002 of the fp32
# one at every step (loss 4.1 -> 2.9); the check leaves a 10x margin.
CURVE_TOLERANCE = 0.02


def _losses(*extra: str) -> np.ndarray:
    state = run_tiny("--eval-iters", "0", "--position-embedding-type", "rope", *extra, iters=40)
    return np.array([loss for _, loss in state.history])


@pytest.mark.parametrize("optimizer", [[], ["--use-distributed-optimizer"]])
def test_bf16_tracks_the_fp32_loss_curve(optimizer):
    fp32, bf16 = _losses(*optimizer), _losses("--bf16", *optimizer)
    assert len(bf16) == 40 and fp32[-1] < fp32[0] - 0.8     # it learns
    assert np.abs(bf16 - fp32).max() < CURVE_TOLERANCE
    assert not np.array_equal(bf16, fp32)                    # it really ran in bf16


def test_microbatch_gradients_accumulate_in_fp32():
    layer = torch.nn.Linear(4, 1, bias=False).bfloat16()
    opt = get_megatron_optimizer([layer], OptimizerConfig(bf16=True))
    opt.zero_grad()
    # grads 1 and 2^-10: their bf16 sum rounds back to 1, the fp32 sum does not
    for x in (torch.ones(1, 4), torch.full((1, 4), 2.0 ** -10)):
        layer(x.bfloat16()).sum().backward()
        assert layer.weight.grad is None                  # moved into main_grad by the hook
    assert layer.weight.main_grad.dtype == torch.float32
    assert torch.equal(layer.weight.main_grad, torch.full((1, 4), 1.0 + 2.0 ** -10))


def test_grad_dtype_follows_megatron():
    def built(*flags):
        return validate_args(parse_args(args=[
            "--num-layers", "2", "--hidden-size", "8", "--num-attention-heads", "2",
            "--seq-length", "8", "--micro-batch-size", "1", "--lr", "1e-3", "--vocab-size",
            "16", "--train-iters", "1", *flags]))
    assert built("--bf16").accumulate_allreduce_grads_in_fp32          # forced for bf16
    assert not built("--fp16").accumulate_allreduce_grads_in_fp32      # fp16 keeps fp16
    assert built("--fp16", "--accumulate-allreduce-grads-in-fp32").accumulate_allreduce_grads_in_fp32
    for config, want in ((OptimizerConfig(fp16=True), torch.float16),
                         (OptimizerConfig(fp16=True, accumulate_allreduce_grads_in_fp32=True),
                          torch.float32)):
        layer = torch.nn.Linear(4, 4).half()
        get_megatron_optimizer([layer], config)
        assert layer.weight.main_grad.dtype == want


@pytest.mark.parametrize("backend, cuda", [("gloo", True), ("nccl", False)])
def test_a_backend_the_machine_cannot_run_is_refused(monkeypatch, backend, cuda):
    """gloo beside CUDA (the model would be on the GPU); nccl without CUDA (Megatron-
    DeepSpeed's Llama-2 script names it; it would fail deep in torch otherwise)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    with pytest.raises(ArgumentValidationError, match=f"--distributed-backend {backend} on a"):
        validate_args(parse_args(args=[
            "--num-layers", "2", "--hidden-size", "8", "--num-attention-heads", "2",
            "--seq-length", "8", "--micro-batch-size", "1", "--lr", "1e-3", "--vocab-size",
            "16", "--train-iters", "1", "--distributed-backend", backend]))


@pytest.mark.parametrize("optimizer", [[], ["--use-distributed-optimizer"]])
def test_finetune_in_bf16_starts_from_the_loaded_weights(tmp_path, optimizer):
    """The fp32 masters are rebuilt from the loaded weights when the optimizer state is not
    loaded: a master left at the initial weights would undo the load at the first step."""
    ckpt = str(tmp_path / "ckpt")
    trained = run_tiny("--eval-iters", "0", "--bf16", "--save", ckpt, *optimizer, iters=20)
    tuned = run_tiny("--eval-iters", "0", "--bf16", "--load", ckpt, "--finetune",
                     "--lr", "1e-6", "--min-lr", "0", *optimizer, iters=3)
    # both read the same first samples; the trained model is better on each by ~0.8 and
    # stays so through the tiny-lr updates (from the initial weights it would not)
    for (_, start), (_, tuned_loss) in zip(trained.history, tuned.history):
        assert tuned_loss < start - 0.4
