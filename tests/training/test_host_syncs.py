"""Host syncs in the training step, counted with a CUDA-free tracer.

On a GPU, ``.item()``, ``.tolist()``, ``.cpu()``, ``.numpy()`` and ``bool/float/int`` of a
tensor wait for the device queue to drain. The tracer (a ``TorchFunctionMode``) counts
those calls on every tensor inside ``train_step``; on CPU every tensor stands for a device
tensor, so the count is an upper bound of the GPU's. A step must make a fixed number of
them, independent of the number of micro-batches and of dropping layers: no sync per
layer (the random-LTD indices are drawn on the host and copied once per micro-batch) and
none per micro-batch (the losses are reduced once a step).
"""
from __future__ import annotations

import collections
import traceback

import pytest
import torch
from torch.overrides import TorchFunctionMode

import megatron.training as training
from tests.training.helpers import run_tiny

SYNCS = {"item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__"}


def _is_blocking_copy(args: tuple, kwargs: dict) -> bool:
    """``tensor.to(device)`` to another device without ``non_blocking`` (a dtype cast or a
    copy to the tensor's own device is not a sync). On CPU-only runs the model's copies
    stay on the CPU; the one-copy, non-blocking move of the random-LTD indices is tested
    with the ``meta`` device in tests/data_efficiency/random_ltd."""
    targets = [a for a in (*args[1:], kwargs.get("device"))
               if isinstance(a, (str, torch.device))]
    if not targets or kwargs.get("non_blocking", False):
        return False
    return torch.device(targets[0]).type != args[0].device.type


class HostSyncTracer(TorchFunctionMode):
    """Counts the tensor methods that block on the device, with where they were called."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in SYNCS or (name == "to" and _is_blocking_copy(args, kwargs or {})):
            where = [f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}"
                     for f in traceback.extract_stack()[:-1] if "/megatron/" in f.filename
                     or "pretrain_" in f.filename]
            self.calls[f"{name} at {where[-1] if where else '?'}"] += 1
        return func(*args, **(kwargs or {}))


_TRAIN_STEP = training.train_step


def _syncs_per_step(monkeypatch, *flags) -> tuple[list[int], collections.Counter]:
    counts = []
    original = _TRAIN_STEP

    def traced(*args, **kwargs):
        with HostSyncTracer() as tracer:
            stats = original(*args, **kwargs)
        counts.append(sum(tracer.calls.values()))
        traced.last = tracer.calls
        return stats

    monkeypatch.setattr(training, "train_step", traced)
    run_tiny("--eval-iters", "0", "--num-workers", "2", "--position-embedding-type", "rope",
             *flags, iters=3)
    return counts, traced.last


LTD = ["--random-ltd", "--random-ltd-min-seqlen", "4", "--random-ltd-total-steps", "100",
       "--random-ltd-seq-per-step", "4"]
CL = ["--data-efficiency-curriculum-learning", "--curriculum-metric", "seqtru",
      "--curriculum-min-difficulty", "8", "--curriculum-max-difficulty", "16",
      "--curriculum-total-steps", "10", "--curriculum-difficulty-step", "4"]


@pytest.mark.parametrize("precision", [[], ["--bf16"]])
def test_step_syncs_do_not_grow_with_microbatches_or_dropping_layers(monkeypatch, precision):
    small, calls = _syncs_per_step(monkeypatch, *precision, *LTD, *CL, "--num-layers", "3",
                                   "--global-batch-size", "4")
    large, _ = _syncs_per_step(monkeypatch, *precision, *LTD, *CL, "--num-layers", "6",
                               "--global-batch-size", "16")
    assert len(set(small + large)) == 1, (small, large, calls)
    # grad norm (1), loss-scale overflow check under a grad scaler (0 or 1), losses (1)
    assert small[0] <= 3, calls


def test_one_plan_per_step(monkeypatch):
    """The step plan is computed once per step and the schedules once per plan: nobody
    recomputes a step's decisions (pipeline shapes, transform, accounting, logging)."""
    from megatron.data_efficiency.curriculum.scheduler import CurriculumScheduler
    from megatron.data_efficiency.random_ltd.scheduler import RandomLTDScheduler
    from megatron.data_efficiency.step_plan import StepPlanner
    calls = collections.Counter()
    for cls, name in ((StepPlanner, "plan"), (CurriculumScheduler, "difficulty_at"),
                      (RandomLTDScheduler, "kept_length")):
        original = getattr(cls, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(cls, name, counted)
    state = run_tiny("--eval-iters", "0", *LTD, *CL, "--num-layers", "3",
                     "--global-batch-size", "8", iters=4)
    assert state.iteration == 4
    assert calls == {"plan": 4, "difficulty_at": 4, "kept_length": 4}, calls
