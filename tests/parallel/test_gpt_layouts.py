"""GPT under TP / PP / DP layouts matches the single-process model, step by step.

For each layout: 3 optimizer steps from the same initial weights and the same global
batches; the loss of every micro-batch at every step, the (clipped) global gradient norm,
and all weights after the last step must equal the single-process run to fp32 tolerance.
The layouts of one world size share one spawn (starting ranks is the slow part).
"""
from __future__ import annotations

import pytest
import torch

from megatron.core.distributed import checkpoint_layout
from tests.dist_utils import run_distributed
from tests.parallel.gpt_harness import LAYERS, Layout, layouts_worker, reference

RTOL, ATOL = 1e-4, 1e-5

TWO_RANKS = [Layout(tp=2), Layout(pp=2, num_microbatches=4), Layout(dp=2),
             Layout(dp=2, distributed_optimizer=True), Layout(tp=2, sequence_parallel=True)]
FOUR_RANKS = [Layout(tp=2, pp=2), Layout(tp=2, dp=2),
              Layout(tp=2, dp=2, distributed_optimizer=True),
              Layout(pp=2, dp=2, num_microbatches=3, distributed_optimizer=True),
              Layout(tp=2, pp=2, sequence_parallel=True)]


def _check(layout: Layout, ref: dict, results: list[dict]) -> None:
    name = layout.name
    per_rank = layout.num_microbatches
    for r in results:
        torch.testing.assert_close(torch.tensor(r["norms"]), torch.tensor(ref["norms"]),
                                   rtol=RTOL, atol=ATOL, msg=lambda m: f"{name} grad norm: {m}")
        if r["pp"] != layout.pp - 1:
            assert r["losses"] == [[]] * len(ref["losses"]), f"{name}: loss on a middle stage"
            continue
        expected = [step[r["dp"] * per_rank:(r["dp"] + 1) * per_rank] for step in ref["losses"]]
        torch.testing.assert_close(torch.tensor(r["losses"]), torch.tensor(expected),
                                   rtol=RTOL, atol=ATOL, msg=lambda m: f"{name} losses: {m}")
    for r in results:  # data-parallel replicas hold identical weights
        twin = next(o for o in results if o["tp"] == r["tp"] and o["pp"] == r["pp"])
        for key, value in r["state"].items():
            assert torch.equal(value, twin["state"][key]), f"{name}: DP replicas differ at {key}"
    parts = {(r["tp"], r["pp"]): r["state"] for r in results if r["dp"] == 0}
    merged = checkpoint_layout.merge_state_dicts(parts, ref["specs"], LAYERS)
    assert merged.keys() == ref["final"].keys()
    for key, value in ref["final"].items():
        torch.testing.assert_close(merged[key], value, rtol=RTOL, atol=ATOL,
                                   msg=lambda m: f"{name} weight {key}: {m}")
        if layout.pp > 1 and key == checkpoint_layout.WORD_EMBEDDING_KEY:
            last = parts[(0, layout.pp - 1)][checkpoint_layout.TIED_COPY_KEY]
            first = parts[(0, 0)][checkpoint_layout.WORD_EMBEDDING_KEY]
            torch.testing.assert_close(last, first, rtol=0, atol=0,
                                       msg=lambda m: f"{name}: tied embedding copies drifted: {m}")


def _run(layouts: list[Layout], world_size: int) -> None:
    refs = [reference(layout) for layout in layouts]
    for ref in refs:  # the weights really moved, so matching them means something
        moved = max((ref["final"][k] - ref["initial"][k]).abs().max().item() for k in ref["final"])
        assert moved > 100 * ATOL
    cases = [(layout, ref["initial"], ref["specs"]) for layout, ref in zip(layouts, refs)]
    per_rank = run_distributed(layouts_worker, world_size, cases, timeout_s=240)
    for i, (layout, ref) in enumerate(zip(layouts, refs)):
        _check(layout, ref, [results[i] for results in per_rank])


def test_two_rank_layouts_match_single_process():
    _run(TWO_RANKS, 2)


@pytest.mark.slow
def test_four_rank_layouts_match_single_process():
    _run(FOUR_RANKS, 4)
