"""Failures never leave ranks hanging: bad layouts fail everywhere before any collective,
and a rank that dies mid-step makes the others fail, through pretrain(), with an error
naming rank and step."""
from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist

from megatron.core import parallel_state
from megatron.core.distributed.errors import DistributedStepError, collective_context
from tests.dist_utils import DistributedTestError, run_distributed

_COLLECTIVES = ("new_group", "all_reduce", "barrier", "broadcast", "all_gather",
                "send", "recv", "isend", "irecv", "batch_isend_irecv")


def _bad_layout_message(rank: int, monkeypatch) -> str:
    """What ``initialize_model_parallel(2, 2)`` says on ``rank`` of a 2-rank world (the
    process group faked in-process: nothing may reach it before the layout error)."""
    calls = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda *a, **k: 2)
    monkeypatch.setattr(dist, "get_rank", lambda *a, **k: rank)
    for name in _COLLECTIVES:  # record any collective the failing call would issue
        monkeypatch.setattr(dist, name, lambda *a, _n=name, **k: calls.append(_n))
    with pytest.raises(ValueError) as info:
        parallel_state.initialize_model_parallel(tensor_model_parallel_size=2,
                                                 pipeline_model_parallel_size=2)
    assert not calls, f"collectives issued before the layout error: {calls}"
    assert not parallel_state.model_parallel_is_initialized()
    return str(info.value)


def test_bad_layout_fails_on_every_rank_before_any_collective(monkeypatch):
    messages = [_bad_layout_message(rank, monkeypatch) for rank in range(2)]
    assert messages[0] == messages[1]
    assert "world size 2 is not divisible by --tensor-model-parallel-size 2" in messages[0]


_CALLS = [0]


def _dying_forward_step(data_iterator, model):
    """pretrain_gpt's forward step; pipeline stage 0 dies at its third micro-batch (the
    first of step 2: 2 micro-batches per step)."""
    import pretrain_gpt
    _CALLS[0] += 1
    if _CALLS[0] == 3 and parallel_state.get_pipeline_model_parallel_rank() == 0:
        os._exit(7)  # without a word
    return pretrain_gpt.forward_step(data_iterator, model)


def _dying_pretrain_worker(rank: int, world_size: int) -> None:
    from tests.training.helpers import run_tiny
    run_tiny("--pipeline-model-parallel-size", "2", "--eval-iters", "0", iters=3,
             forward_step=_dying_forward_step)


def test_dead_rank_makes_the_others_fail_with_rank_and_step():
    with pytest.raises(DistributedTestError) as info:
        run_distributed(_dying_pretrain_worker, 2, timeout_s=90, pg_timeout_s=5)
    ok, message = info.value.outcomes[1]
    assert not ok
    assert "DistributedStepError: rank 1: step 2:" in message
    assert 0 not in info.value.outcomes  # rank 0 died silently


def test_collective_context_names_rank_and_step_and_keeps_the_cause():
    with pytest.raises(DistributedStepError, match=r"^rank 0: step 42: ValueError: boom$") as info:
        with collective_context(42):
            raise ValueError("boom")
    assert isinstance(info.value.__cause__, ValueError)
    assert (info.value.rank, info.value.step) == (0, 42)
    with pytest.raises(DistributedStepError, match=r"^rank 0: step 1: KeyError"):
        with collective_context(1):  # nested contexts do not stack prefixes
            with collective_context(1):
                raise KeyError("x")
    with collective_context(3):
        torch.zeros(1).add_(1)  # no exception: nothing happens
