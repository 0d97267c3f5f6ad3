"""Optimizer: param groups, fp16 loss scaling (skip on overflow), fp32 main params,
gradient clipping counted once across tensor-parallel ranks."""
import math

import pytest
import torch

from megatron.optimizer import (DynamicGradScaler, OptimizerConfig, get_megatron_optimizer,
                                get_param_groups)
from megatron.optimizer.clip_grads import clip_grad_norm
from tests.dist_utils import run_distributed


def _model(dtype=torch.float32):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8),
                               torch.nn.Linear(8, 2)).to(dtype)


def test_no_weight_decay_on_biases_and_norms():
    groups = get_param_groups([_model()])
    decay, no_decay = groups
    assert decay["wd_mult"] == 1.0 and no_decay["wd_mult"] == 0.0
    assert all(p.ndim == 2 for p in decay["params"]) and len(decay["params"]) == 2
    assert all(p.ndim == 1 for p in no_decay["params"]) and len(no_decay["params"]) == 4


def test_dynamic_scaler_hysteresis_backoff_and_growth():
    s = DynamicGradScaler(initial_scale=2.0 ** 10, min_scale=2.0 ** 8, growth_interval=3,
                          hysteresis=2)
    s.update(True)
    assert s.scale == 2.0 ** 10          # first overflow absorbed by hysteresis
    s.update(True)
    assert s.scale == 2.0 ** 9
    s.update(True)
    assert s.scale == 2.0 ** 8
    s.update(True)
    assert s.scale == 2.0 ** 8           # never below min
    for _ in range(2):
        s.update(False)
    assert s.scale == 2.0 ** 8
    s.update(False)
    assert s.scale == 2.0 ** 9           # 3 clean steps in a row
    state = s.state_dict()
    t = DynamicGradScaler(1.0, 1.0)
    t.load_state_dict(state)
    assert t.state_dict() == state


def test_scaler_rejects_bad_settings():
    with pytest.raises(ValueError, match="--min-loss-scale"):
        DynamicGradScaler(initial_scale=1.0, min_scale=4.0)


def _loss(model, x):
    return model(x).float().pow(2).mean()


def test_fp16_overflow_skips_step_and_backs_off():
    model = _model(torch.float16)
    opt = get_megatron_optimizer([model], OptimizerConfig(fp16=True, initial_loss_scale=2.0 ** 16,
                                                          hysteresis=1, lr=0.1))
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.randn(3, 4, dtype=torch.float16)
    opt.zero_grad()
    opt.scale_loss(_loss(model, x)).backward()
    next(model.parameters()).main_grad[0, 0] = float("inf")   # backward filled the buffer
    ok, norm, _ = opt.step()
    assert ok is False and opt.get_loss_scale() == 2.0 ** 15
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    opt.zero_grad()
    opt.scale_loss(_loss(model, x)).backward()
    ok, norm, _ = opt.step()
    assert ok is True and math.isfinite(norm)
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_bf16_keeps_fp32_main_params_and_matches_fp32_grads():
    ref, half = _model(), _model(torch.bfloat16)
    opt = get_megatron_optimizer([half], OptimizerConfig(bf16=True, lr=1e-2, clip_grad=0))
    assert all(m.dtype == torch.float32 for m in opt.main_params)
    x = torch.randn(5, 4)
    opt.zero_grad()
    _loss(half, x.bfloat16()).backward()
    ok, norm, _ = opt.step()
    _loss(ref, x).backward()
    ref_norm = math.sqrt(sum(p.grad.pow(2).sum().item() for p in ref.parameters()))
    assert ok and norm == pytest.approx(ref_norm, rel=0.05)
    for model_p, main_p in zip(opt.model_params, opt.main_params):
        assert torch.equal(model_p.float(), main_p.detach().bfloat16().float())


def test_fp32_nan_gradient_is_not_applied():
    model = _model()
    opt = get_megatron_optimizer([model], OptimizerConfig())
    before = [p.detach().clone() for p in model.parameters()]
    _loss(model, torch.randn(2, 4)).backward()
    next(model.parameters()).main_grad[0, 0] = float("nan")
    ok, norm, _ = opt.step()
    assert ok is False and math.isnan(norm)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_clip_grad_norm_single_process():
    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([3.0, 4.0, 0.0, 0.0])
    assert clip_grad_norm([p], 1.0) == pytest.approx(5.0)
    assert p.grad.norm().item() == pytest.approx(1.0, rel=1e-5)
    p.grad = torch.tensor([0.3, 0.4, 0.0, 0.0])       # below the threshold: left alone
    assert clip_grad_norm([p], 1.0) == pytest.approx(0.5)
    assert torch.equal(p.grad, torch.tensor([0.3, 0.4, 0.0, 0.0]))


def _tp_norm_worker(rank, world_size):
    from megatron.core import parallel_state
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=2)
    split = torch.nn.Parameter(torch.zeros(2))
    split.tensor_model_parallel = True
    split.grad = torch.tensor([1.0, 2.0]) if rank == 0 else torch.tensor([2.0, 4.0])
    dup = torch.nn.Parameter(torch.zeros(1))      # replicated on both TP ranks
    dup.tensor_model_parallel = False
    dup.grad = torch.tensor([10.0])
    return clip_grad_norm([split, dup], 0.0)


def test_clip_grad_norm_counts_tp_duplicates_once():
    norms = run_distributed(_tp_norm_worker, 2)
    expect = math.sqrt(1 + 4 + 4 + 16 + 100)
    assert norms == [pytest.approx(expect), pytest.approx(expect)]


def test_distributed_optimizer_refuses_a_checkpoint_of_the_flat_layout():
    """A distrib_optim_dp*.pt written before the gradient buffers (one flat layout, integer
    sizes) is refused with the flag that resumes without it."""
    opt = get_megatron_optimizer([_model()], OptimizerConfig(use_distributed_optimizer=True))
    with pytest.raises(ValueError, match="--no-load-optim"):
        opt.load_state_dict({"optimizer": {}, "masters": [], "dp_rank": 0, "dp_size": 1,
                             "padded_numel": 66})
