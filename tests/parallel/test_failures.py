"""Failures never leave ranks hanging: bad layouts fail everywhere before any collective,
and a rank that dies mid-step makes the others fail with an error naming rank and step."""
from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist

from megatron.core import parallel_state
from megatron.core.distributed.errors import DistributedStepError, collective_context
from megatron.core.distributed.finalize_model_grads import finalize_model_grads
from megatron.core.pipeline_parallel.pipelined_schedules import (
    forward_backward_pipelining_without_interleaving)
from tests.dist_utils import DistributedTestError, run_distributed
from tests.parallel.test_pipeline_toy import (
    LAYERS, MBS, NUM_MB, SEQ, ToyStage, _forward_step, _full_model, _microbatches)

_COLLECTIVES = ("new_group", "all_reduce", "barrier", "broadcast", "all_gather",
                "send", "recv", "isend", "irecv", "batch_isend_irecv")


def _bad_layout_worker(rank: int, world_size: int) -> str:
    calls = []
    for name in _COLLECTIVES:  # record any collective the failing call would issue
        setattr(dist, name, lambda *a, _n=name, **k: calls.append(_n))
    try:
        parallel_state.initialize_model_parallel(tensor_model_parallel_size=2,
                                                 pipeline_model_parallel_size=2)
    except ValueError as exc:
        assert not calls, f"collectives issued before the layout error: {calls}"
        assert not parallel_state.model_parallel_is_initialized()
        return str(exc)
    return "no error"


def test_bad_layout_fails_on_every_rank_before_any_collective():
    messages = run_distributed(_bad_layout_worker, 2, timeout_s=60)
    assert messages[0] == messages[1]
    assert "world size 2 is not divisible by --tensor-model-parallel-size 2" in messages[0]


def _dying_pipeline_worker(rank: int, world_size: int) -> None:
    parallel_state.initialize_model_parallel(1, 2)
    stage = parallel_state.get_pipeline_model_parallel_rank()
    layers = _full_model()[stage * LAYERS // 2:(stage + 1) * LAYERS // 2]
    model = ToyStage(layers, stage == 0, stage == 1)
    for step in range(3):
        if step == 1 and rank == 1:
            os._exit(7)  # the last stage dies without a word
        with collective_context(step):
            forward_backward_pipelining_without_interleaving(
                forward_step_func=_forward_step, data_iterator=iter(_microbatches()),
                model=model, num_microbatches=NUM_MB, seq_length=SEQ, micro_batch_size=MBS)
            finalize_model_grads([model])
            dist.barrier()


def test_dead_rank_makes_the_others_fail_with_rank_and_step():
    with pytest.raises(DistributedTestError) as info:
        run_distributed(_dying_pipeline_worker, 2, timeout_s=90, pg_timeout_s=5)
    ok, message = info.value.outcomes[0]
    assert not ok
    assert "DistributedStepError: rank 0: step 1:" in message
    assert 1 not in info.value.outcomes  # rank 1 died silently


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
