"""ZeRO-1 distributed optimizer on DP2 against torch AdamW in one process.

A toy model with an odd number of elements (so the last shard is padded) and two param
groups with different weight decay (so a group straddles the shard boundary). Checks the
weights after each of 3 steps, the clipped gradient norm, that each rank really holds only
half of the Adam state, that saving after step 2 and loading into a fresh optimizer
reproduces step 3 exactly, and that fp16 loss scaling unscales correctly and skips the
step on every rank when one rank overflows.
"""
from __future__ import annotations

import io

import torch
from torch import nn

from megatron.core import parallel_state
from megatron.core.distributed.distributed_optimizer import DistributedOptimizer
from megatron.core.distributed.finalize_model_grads import finalize_model_grads
from megatron.optimizer.grad_scaler import ConstantGradScaler

OPT = dict(lr=0.05, betas=(0.9, 0.95), eps=1e-8)
CLIP, STEPS, BATCH = 0.5, 3, 8


def _model() -> nn.Module:
    torch.manual_seed(7)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))  # 42 + 24 = 66 elements


def _groups(model: nn.Module) -> list[dict]:
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    return [{"params": weights, "weight_decay": 0.1}, {"params": biases, "weight_decay": 0.0}]


def _adamw(groups: list[dict]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, **OPT)


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(BATCH, 5, generator=g), torch.randn(BATCH, 3, generator=g)


def _loss(model, x, y):
    return ((model(x) - y) ** 2).mean()


def _reference() -> tuple[list[list[torch.Tensor]], list[float]]:
    model = _model()
    opt = torch.optim.AdamW(_groups(model), **OPT)
    weights, norms = [], []
    for step in range(STEPS):
        opt.zero_grad()
        _loss(model, *_batch(step)).backward()
        norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP).item())
        opt.step()
        weights.append([p.detach().clone() for p in model.parameters()])
    return weights, norms


def _train(model, opt, rank, steps):
    weights, norms = [], []
    for step in steps:
        opt.zero_grad()
        x, y = _batch(step)
        half = BATCH // 2
        loss = _loss(model, x[rank * half:(rank + 1) * half], y[rank * half:(rank + 1) * half])
        opt.scale_loss(loss).backward()
        finalize_model_grads([model])
        ok, norm, _ = opt.step()
        assert ok
        weights.append([p.detach().clone() for p in model.parameters()])
        norms.append(norm)
    return weights, norms


def worker(rank: int, world_size: int) -> dict:
    parallel_state.initialize_model_parallel(1, 1)
    model = _model()
    opt = DistributedOptimizer(_groups(model), _adamw, clip_grad=CLIP)
    weights, norms = _train(model, opt, rank, range(2))
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)  # a real serialisation, as a checkpoint does
    state_numel = sum(s["exp_avg"].numel() for s in opt.optimizer.state.values())
    more_weights, more_norms = _train(model, opt, rank, [2])

    # Resume: a fresh model/optimizer loaded from the step-2 state reproduces step 3.
    resumed_model = _model()
    with torch.no_grad():
        for p, w in zip(resumed_model.parameters(), weights[-1]):
            p.copy_(w)
    resumed = DistributedOptimizer(_groups(resumed_model), _adamw, clip_grad=CLIP)
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer))
    resumed_weights, _ = _train(resumed_model, resumed, rank, [2])

    # fp16-style loss scaling: the scaled gradients are unscaled before clipping/stepping.
    scaled_model = _model()
    scaled = DistributedOptimizer(_groups(scaled_model), _adamw, clip_grad=CLIP,
                                  grad_scaler=ConstantGradScaler(1024.0))
    scaled_weights, _ = _train(scaled_model, scaled, rank, range(STEPS))
    # An overflow on one rank skips the step on every rank and leaves the weights alone.
    before = [p.detach().clone() for p in scaled_model.parameters()]
    scaled.zero_grad()
    for p in scaled_model.parameters():   # the gradient buffer the step reduces
        p.main_grad.fill_(float("inf") if rank == 1 else 1.0)
    skipped = scaled.step()[0] is False
    unchanged = all(torch.equal(a, b) for a, b in zip(before, scaled_model.parameters()))
    parallel_state.destroy_model_parallel()
    return {"weights": weights + more_weights, "norms": norms + more_norms,
            "resumed": resumed_weights[0], "state_numel": state_numel,
            "scaled": scaled_weights, "skipped": skipped and unchanged}


def two_rank_jobs(tmp_path_factory) -> dict:
    """This module's job in the session's shared 2-rank spawn (tests/conftest.py)."""
    return {"distopt": (worker,)}


def test_distributed_optimizer_matches_adamw_and_resumes_exactly(two_rank_spawn):
    results = two_rank_spawn["distopt"]  # worker() on DP2, in the shared spawn
    ref_weights, ref_norms = _reference()
    for result in results:
        for step in range(STEPS):
            for got, ref in zip(result["weights"][step], ref_weights[step]):
                torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(torch.tensor(result["norms"]), torch.tensor(ref_norms),
                                   rtol=1e-5, atol=1e-6)
        for got, ref in zip(result["resumed"], result["weights"][2]):
            assert torch.equal(got, ref)
        assert result["state_numel"] == 33  # half of the 66 elements per rank
        for got, ref in zip(result["scaled"][-1], ref_weights[-1]):
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
        assert result["skipped"]
    assert ref_norms[0] > CLIP  # clipping really happened
