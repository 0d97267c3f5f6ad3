"""pretrain() on 4 gloo ranks (2 pipeline stages x 2 data-parallel ranks, ZeRO-1
optimizer) matches one process."""
import os

import pytest

from tests.training.helpers import run_tiny

FLAGS = ("--hidden-dropout", "0", "--attention-dropout", "0", "--eval-iters", "1")


def _worker(rank, world_size, ckpt):
    state = run_tiny(*FLAGS, "--pipeline-model-parallel-size", "2",
                     "--use-distributed-optimizer", "--save", ckpt, iters=4)
    return state.history, state.last_validation


_CKPT: list[str] = []    # the runs' checkpoint folder, set when the spawn's jobs are built


def four_rank_jobs(tmp_path_factory) -> dict:
    """This module's job in the session's shared 4-rank spawn (tests/conftest.py)."""
    _CKPT[:] = [str(tmp_path_factory.mktemp("pp2dp2") / "ckpt")]
    return {"pp2_dp2_distopt": (_worker, _CKPT[0])}


def test_pipeline_and_data_parallel_match_single_process(four_rank_spawn):
    reference = run_tiny(*FLAGS, iters=4)
    ckpt = _CKPT[0]
    results = four_rank_spawn["pp2_dp2_distopt"]
    # Ranks 0, 1: first stage (no loss); ranks 2, 3: last stage, DP-averaged loss.
    assert results[0] == results[1] == ([], {})
    for history, validation in results[2:]:
        assert [it for it, _ in history] == [1, 2, 3, 4]
        assert [l for _, l in history] == pytest.approx([l for _, l in reference.history],
                                                        rel=1e-5)
        assert validation["lm loss"] == pytest.approx(reference.last_validation["lm loss"],
                                                      rel=1e-5)
    for stage in ("mp_rank_00_000", "mp_rank_00_001"):
        assert sorted(os.listdir(os.path.join(ckpt, "iter_0000004", stage))) == [
            "distrib_optim_dp000.pt", "distrib_optim_dp001.pt", "model_optim_rng.pt"]
