"""A 4-expert GPT at EP2 (2 ranks), EP2 x TP2 and EP2 x PP2 (4 ranks) equals the
single-process model: every micro-batch loss, the clipped global gradient norm, the
initial and final weights (experts matched by global id), with no drops and with a
finite capacity (drops identical to the single process), with the distributed optimizer
(dense shards over DP, expert shards over expert-DP) and at EP2 x DP4 (expert-DP 2); a
Llama-shaped model (RMSNorm, grouped-query attention, SwiGLU experts, no biases) at EP2.
Also the group layout rules."""
from __future__ import annotations

import pytest
import torch

from megatron.core import parallel_state
from megatron.checkpointing import model_split as checkpoint_layout
from tests.moe.ep_harness import EPLayout, global_expert_names, layouts_worker, reference
from tests.parallel.gpt_harness import LAYERS

RTOL, ATOL = 1e-4, 1e-5
TWO = [EPLayout(ep=2, dp=2), EPLayout(ep=2, dp=2, capacity_factor=1.0),
       EPLayout(ep=2, dp=2, distributed_optimizer=True),
       EPLayout(ep=2, dp=2, distributed_optimizer=True, llama=True)]
FOUR = [EPLayout(ep=2, dp=2, tp=2),
        EPLayout(ep=2, dp=2, pp=2, num_microbatches=3, capacity_factor=1.0),
        EPLayout(ep=2, dp=2, tp=2, capacity_factor=1.0), EPLayout(ep=2, dp=4),
        EPLayout(ep=2, dp=4, distributed_optimizer=True, capacity_factor=1.0)]


def _check(layout: EPLayout, ref: dict, results: list[dict]) -> None:
    name, per_rank = layout.name, layout.num_microbatches
    for r in results:
        torch.testing.assert_close(torch.tensor(r["norms"]), torch.tensor(ref["norms"]),
                                   rtol=RTOL, atol=ATOL, msg=lambda m: f"{name} norms: {m}")
        if r["pp"] == layout.pp - 1:
            expected = [s[r["dp"] * per_rank:(r["dp"] + 1) * per_rank] for s in ref["losses"]]
            torch.testing.assert_close(torch.tensor(r["losses"]), torch.tensor(expected),
                                       rtol=RTOL, atol=ATOL, msg=lambda m: f"{name} loss: {m}")
    # each rank counts its own layers' drops: summed over DP ranks and stages (one TP
    # rank) they equal the single process's, step by step
    total = [sum(r["dropped"][s] for r in results if r["tp"] == 0) for s in range(3)]
    assert total == ref["dropped"], name
    assert (layout.capacity_factor is None) == (sum(total) == 0), name
    for key in ("initial", "final"):
        expected = checkpoint_layout.split_state_dict(
            ref[key], ref["specs"], layout.tp, layout.pp, LAYERS,
            tied_embeddings=not layout.llama)
        seen = {(t, p): set() for t, p in expected}
        for r in results:
            part = expected[(r["tp"], r["pp"])]
            state = global_expert_names(r["initial" if key == "initial" else "state"], layout,
                                        r["ep"])
            for k, v in state.items():
                torch.testing.assert_close(v, part[k], rtol=RTOL, atol=ATOL,
                                           msg=lambda m: f"{name} {key} {k}: {m}")
                seen[(r["tp"], r["pp"])].add(k)
        for pos, part in expected.items():
            assert seen[pos] == set(part), f"{name}: {set(part) - seen[pos]} held by no rank"


def two_rank_jobs(tmp_path_factory) -> dict:
    """The 2-rank layouts, in the session's shared 2-rank spawn (tests/conftest.py)."""
    return {"moe_layouts": (layouts_worker, TWO)}


def four_rank_jobs(tmp_path_factory) -> dict:
    """The 4-rank layouts, in the session's shared 4-rank spawn (tests/conftest.py)."""
    return {"moe_layouts": (layouts_worker, FOUR)}


@pytest.mark.parametrize("world,layouts", [(2, TWO), (4, FOUR)], ids=["2ranks", "4ranks"])
def test_expert_parallel_layouts_match_single_process(world, layouts, request):
    spawn = request.getfixturevalue("two_rank_spawn" if world == 2 else "four_rank_spawn")
    results = spawn["moe_layouts"]
    for i, layout in enumerate(layouts):
        _check(layout, reference(layout), [r[i] for r in results])


def test_expert_group_ranks_follow_megatron_order():
    layout = parallel_state.validate_parallel_layout(8, 2, 1, expert_model_parallel_size=2)
    ep, edp = parallel_state.expert_group_ranks(layout)
    # TP2 x DP4: DP groups [0,2,4,6] and [1,3,5,7]; EP runs of 2 consecutive DP ranks
    assert ep == [[0, 2], [4, 6], [1, 3], [5, 7]]
    assert edp == [[0, 4], [2, 6], [1, 5], [3, 7]]


def test_expert_parallel_size_must_divide_data_parallel():
    with pytest.raises(ValueError, match="expert-model-parallel-size 3"):
        parallel_state.validate_parallel_layout(4, 1, 1, expert_model_parallel_size=3)
