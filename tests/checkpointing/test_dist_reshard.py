"""--ckpt-format torch_dist under another layout: a checkpoint saved at one (TP, PP, DP)
layout, with or without the distributed optimizer, resumes at three others with its
optimizer state, and the next steps' losses equal the run continued at the saved layout
to fp32 rounding.

On 4 gloo ranks, with the harness's Llama-shaped model (query groups split by TP, the
SwiGLU weight split with stride 2, untied output layer) driven as in
``tests/parallel/gpt_harness.py``. Two saves, three loads:

    TP2 x DP2, distributed optimizer  ->  TP1 x DP4, distributed optimizer
                                      ->  TP2 x PP2, plain optimizer
    TP1 x PP2 x DP2 (saved in the     ->  TP2 x DP2, distributed optimizer
    background, --async-save)
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os

import pytest
import torch

from megatron.checkpointing import load_checkpoint, save_checkpoint
from megatron.checkpointing import model_split
from megatron.checkpointing.dist_format import AsyncSaver
from megatron.checkpointing.whole_model import load_whole
from megatron.core import parallel_state
from megatron.core.distributed.finalize_model_grads import finalize_model_grads
from megatron.core.pipeline_parallel.schedules import get_forward_backward_func
from megatron.initialize import set_seeds
from megatron.model.gpt_model import GPTModel
from megatron.optimizer import get_megatron_optimizer
from megatron.run_config import ParallelConfig, RunConfig, TokenizerConfig
from tests.dist_utils import isolated_jobs, run_distributed
from tests.parallel import gpt_harness as h

BEFORE, AFTER = 1, 2          # steps before the save (Adam moments set), steps compared after it
ROWS = 8                      # global batch rows, the same under every layout


def _layout(tp, pp, dp, distopt=False) -> h.Layout:
    return h.Layout(tp=tp, pp=pp, dp=dp, micro_batch_size=2, num_microbatches=ROWS // (2 * dp),
                    distributed_optimizer=distopt, llama=True)


def _steps(chunks, optimizer, layout: h.Layout, first: int, count: int) -> list[list[float]]:
    """Train steps ``first .. first + count - 1``; this rank's micro-batch losses."""
    schedule, out = get_forward_backward_func(), []
    dp_rank = parallel_state.get_data_parallel_rank()
    per_rank = layout.micro_batch_size * layout.num_microbatches
    for step in range(first, first + count):
        tokens = h.global_batch(step, layout)[dp_rank * per_rank:(dp_rank + 1) * per_rank]
        optimizer.zero_grad()
        loss_dicts = schedule(forward_step_func=h.forward_step,
                              data_iterator=iter(h.microbatches(tokens, layout.micro_batch_size)),
                              model=chunks, num_microbatches=layout.num_microbatches,
                              seq_length=h.SEQ, micro_batch_size=layout.micro_batch_size)
        finalize_model_grads(chunks)
        ok, _, _ = optimizer.step()
        assert ok
        out.append([d["lm loss"].item() for d in loss_dicts])
    return out


def _build(layout: h.Layout):
    parallel_state.initialize_model_parallel(layout.tp, layout.pp)
    set_seeds(h.SEED + 1)   # another start than the saved run's: the load must set it all
    chunks = h._build_chunks(layout)
    return chunks, get_megatron_optimizer(chunks, h.optimizer_config(layout))


def _report(losses) -> dict:
    last = parallel_state.is_pipeline_last_stage()
    return {"losses": losses if last and parallel_state.get_tensor_model_parallel_rank() == 0
            else None}


def _save_then_continue(rank, world_size, layout: h.Layout, ckpt: str,
                        background: bool) -> dict:
    """``background``: --async-save, training goes on while the checkpoint is written."""
    parallel_state.initialize_model_parallel(layout.tp, layout.pp)
    set_seeds(h.SEED)
    chunks = h._build_chunks(layout)
    optimizer = get_megatron_optimizer(chunks, h.optimizer_config(layout))
    _steps(chunks, optimizer, layout, 0, BEFORE)
    saver = AsyncSaver() if background else None
    save_checkpoint(BEFORE, chunks, optimizer, None, {"iteration": BEFORE}, save_dir=ckpt,
                    ckpt_format="torch_dist", async_saver=saver,
                    run_config=_record(layout))
    saved = {k: v.clone() for k, v in chunks[0].state_dict().items()}
    report = _report(_steps(chunks, optimizer, layout, BEFORE, AFTER))
    if saver is not None:
        saver.wait()
    return {**report, "saved": saved, "tp": parallel_state.get_tensor_model_parallel_rank(),
            "pp": parallel_state.get_pipeline_model_parallel_rank()}


def _record(layout: h.Layout) -> RunConfig:
    """The run a converter rebuilds the model from (pretrain() records its whole config)."""
    return RunConfig(model=dataclasses.replace(h.model_config(layout), vocab_size=h.VOCAB),
                     parallel=ParallelConfig(tensor_model_parallel_size=layout.tp,
                                             pipeline_model_parallel_size=layout.pp,
                                             virtual_pipeline_model_parallel_size=layout.vp),
                     tokenizer=TokenizerConfig(orig_vocab_size=h.VOCAB), model_type="gpt")


def _load_and_continue(rank, world_size, layout: h.Layout, ckpt: str) -> dict:
    chunks, optimizer = _build(layout)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        iteration, _ = load_checkpoint(chunks, optimizer, None, load_dir=ckpt)
    assert iteration == BEFORE
    # another TP x PP: the saved ranks' RNG states are not this rank's
    assert "its RNG states are not loaded" in printed.getvalue()
    return _report(_steps(chunks, optimizer, layout, BEFORE, AFTER))


def _step_means(outs: list[dict]) -> list[float]:
    """Mean loss per step over the whole global batch (every micro-batch is the same size)."""
    per_rank = [o["losses"] for o in outs if o["losses"] is not None]
    return [sum(sum(r[s]) for r in per_rank) / sum(len(r[s]) for r in per_rank)
            for s in range(AFTER)]


# name -> (layout, saved in the background)
SAVED = {"tp2dp2_distopt": (_layout(2, 1, 2, True), False), "tp1pp2dp2": (_layout(1, 2, 2), True)}
LOADS = [("tp2dp2_distopt", _layout(1, 1, 4, True)), ("tp2dp2_distopt", _layout(2, 2, 1)),
         ("tp1pp2dp2", _layout(2, 1, 2, True))]


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    root = tmp_path_factory.mktemp("reshard")
    jobs = [(_save_then_continue, layout, os.path.join(root, name), background)
            for name, (layout, background) in SAVED.items()]
    jobs += [(_load_and_continue, layout, os.path.join(root, name)) for name, layout in LOADS]
    per_rank = run_distributed(isolated_jobs, 4, jobs, timeout_s=400)
    by_job = [[outs[j] for outs in per_rank] for j in range(len(jobs))]
    continued = {name: _step_means(by_job[i]) for i, name in enumerate(SAVED)}
    saved = {name: {(o["tp"], o["pp"]): o["saved"] for o in by_job[i]}
             for i, name in enumerate(SAVED)}
    return continued, [(name, layout, _step_means(by_job[len(SAVED) + i]))
                       for i, (name, layout) in enumerate(LOADS)], saved, root


@pytest.mark.parametrize("case", range(len(LOADS)), ids=[
    f"{n}->{dataclasses.replace(lay).name}" for n, lay in LOADS])
def test_resumed_under_another_layout_equals_the_run_continued(resumed, case):
    continued, loads, _, _ = resumed
    name, layout, losses = loads[case]
    # step BEFORE: the loaded weights; step BEFORE + 1: one update with the loaded
    # Adam moments (fresh moments would move the weights differently)
    assert losses == pytest.approx(continued[name], rel=2e-6, abs=0), layout.name


@pytest.mark.parametrize("name", list(SAVED))
def test_the_whole_model_reads_from_a_torch_dist_checkpoint(resumed, name):
    """``whole_model.load_whole`` (the converter's, the tasks' and the analyzer's reader)
    gives the saved ranks' weights merged, the stride-split SwiGLU weight included."""
    _, _, saved, root = resumed
    layout = SAVED[name][0]
    specs = model_split.param_specs(GPTModel(h.model_config(layout)))
    expected = model_split.merge_state_dicts(saved[name], specs, h.LAYERS)
    iteration, _, config, full = load_whole(os.path.join(root, name))
    assert iteration == BEFORE and config.model_type == "gpt"
    assert full.keys() == expected.keys()
    for key in full:
        assert torch.equal(full[key], expected[key]), key
