"""GPT under TP / PP / DP layouts matches the single-process model, step by step.

For each layout (FSDP2 as ZeRO-2 and ZeRO-3 among them: DP2, DP2 x TP2 with sequence
parallelism), with the GPT-2-shaped model and the Llama-shaped one (RMSNorm,
grouped-query attention, SwiGLU, no biases, scaled rotary, untied output):
every rank builds its part with the same seed (--use-cpu-initialization)
and must hold exactly the single-process model's initial weights; then 3 optimizer steps
over the same global batches: the loss of every micro-batch at every step, the (clipped)
global gradient norm, and all weights after the last step must equal the single-process
run to fp32 tolerance. The layouts of one world size share one spawn (starting ranks is
the slow part).
"""
from __future__ import annotations

import pytest
import torch

from megatron.checkpointing import model_split as checkpoint_layout
from tests.parallel.gpt_harness import (LAYERS, Layout, layouts_worker, reference,
                                        stage_states)
from tests.parallel.test_pipeline_toy import check_interleaved, interleaved_worker

RTOL, ATOL = 1e-4, 1e-5

TWO_RANKS = [Layout(tp=2), Layout(pp=2, num_microbatches=4), Layout(pp=2, vp=2, num_microbatches=4),
             Layout(dp=2),
             Layout(dp=2, distributed_optimizer=True), Layout(tp=2, sequence_parallel=True),
             Layout(tp=2, llama=True), Layout(pp=2, num_microbatches=4, llama=True),
             Layout(dp=2, distributed_optimizer=True, llama=True),
             Layout(tp=2, sequence_parallel=True, llama=True),
             Layout(dp=2, fsdp=3), Layout(dp=2, fsdp=2, llama=True)]
FOUR_RANKS = [Layout(tp=2, pp=2), Layout(tp=2, dp=2),
              Layout(tp=2, dp=2, distributed_optimizer=True),
              Layout(pp=2, dp=2, num_microbatches=3, distributed_optimizer=True),
              Layout(tp=2, pp=2, sequence_parallel=True),
              Layout(tp=2, pp=2, vp=2, num_microbatches=4),
              Layout(tp=2, pp=2, llama=True),
              Layout(tp=2, dp=2, fsdp=3, sequence_parallel=True)]


def _check(layout: Layout, ref: dict, results: list[dict]) -> None:
    name = layout.name
    per_rank = layout.num_microbatches
    for r in results:
        torch.testing.assert_close(torch.tensor(r["norms"]), torch.tensor(ref["norms"]),
                                   rtol=RTOL, atol=ATOL, msg=lambda m: f"{name} grad norm: {m}")
        assert r["adam"].keys() == ref["adam"].keys(), name
        for key, value in ref["adam"].items():   # every element counted once, all layouts
            assert r["adam"][key] == pytest.approx(value, rel=RTOL, abs=1e-9), f"{name} {key}"
        if r["pp"] != layout.pp - 1:
            assert r["losses"] == [[]] * len(ref["losses"]), f"{name}: loss on a middle stage"
            continue
        expected = [step[r["dp"] * per_rank:(r["dp"] + 1) * per_rank] for step in ref["losses"]]
        torch.testing.assert_close(torch.tensor(r["losses"]), torch.tensor(expected),
                                   rtol=RTOL, atol=ATOL, msg=lambda m: f"{name} losses: {m}")
    for r in results:  # data-parallel replicas hold identical weights
        twin = next(o for o in results if o["tp"] == r["tp"] and o["pp"] == r["pp"])
        for chunk, twin_chunk in zip(r["state"], twin["state"]):
            for key, value in chunk.items():
                assert torch.equal(value, twin_chunk[key]), f"{name}: DP replicas differ at {key}"
    tied = not layout.llama
    expected = checkpoint_layout.split_state_dict(
        ref["initial"], ref["specs"], layout.tp, layout.pp * (layout.vp or 1), LAYERS,
        tied_embeddings=tied)
    for r in results:  # the layout changes nothing about the starting point
        for (tp, stage), part in stage_states(r, layout, "initial").items():
            full = expected[(tp, stage)]
            assert part.keys() == full.keys(), name
            for key, value in part.items():
                assert torch.equal(value, full[key]), f"{name}: initial {key} (stage {stage})"
    parts = {k: v for r in results if r["dp"] == 0
             for k, v in stage_states(r, layout, "state").items()}
    merged = checkpoint_layout.merge_state_dicts(parts, ref["specs"], LAYERS)
    assert merged.keys() == ref["final"].keys()
    for key, value in ref["final"].items():
        torch.testing.assert_close(merged[key], value, rtol=RTOL, atol=ATOL,
                                   msg=lambda m: f"{name} weight {key}: {m}")
        if tied and layout.pp > 1 and key == checkpoint_layout.WORD_EMBEDDING_KEY:
            last = parts[(0, max(parts)[1])][checkpoint_layout.TIED_COPY_KEY]
            first = parts[(0, 0)][checkpoint_layout.WORD_EMBEDDING_KEY]
            torch.testing.assert_close(last, first, rtol=0, atol=0,
                                       msg=lambda m: f"{name}: tied embedding copies drifted: {m}")


def _check_all(layouts: list[Layout], per_rank: list[list[dict]]) -> None:
    """``per_rank[rank][i]``: layout ``i``'s result on ``rank``."""
    for i, layout in enumerate(layouts):
        ref = reference(layout)
        # the weights really moved, so matching them means something
        moved = max((ref["final"][k] - ref["initial"][k]).abs().max().item() for k in ref["final"])
        assert moved > 100 * ATOL
        _check(layout, ref, [results[i] for results in per_rank])


def two_rank_jobs(tmp_path_factory) -> dict:
    """This module's job in the session's shared 2-rank spawn (tests/conftest.py)."""
    from tests.parallel.gpt_harness import layouts_worker
    return {"layouts": (layouts_worker, TWO_RANKS)}


def test_two_rank_layouts_match_single_process(two_rank_spawn):
    _check_all(TWO_RANKS, two_rank_spawn["layouts"])  # run in the shared spawn


INTERLEAVED_COUNTS = [8, 4]


def four_rank_jobs(tmp_path_factory) -> dict:
    """The 4-rank layouts and, in the same session-wide 4-rank spawn (tests/conftest.py),
    the toy interleaved 1F1B over 4 stages (test_pipeline_toy), where the activation sent
    by the last stage wraps around to the first."""
    return {"layouts": (layouts_worker, FOUR_RANKS),
            "interleaved": (interleaved_worker, INTERLEAVED_COUNTS)}


@pytest.mark.slow
def test_four_rank_layouts_match_single_process(four_rank_spawn):
    _check_all(FOUR_RANKS, four_rank_spawn["layouts"])
    check_interleaved(4, INTERLEAVED_COUNTS, four_rank_spawn["interleaved"])
