"""pretrain() with 4 experts at EP2 on 2 gloo ranks (distributed optimizer): the same
losses as one process, one checkpoint file per expert-parallel rank (Megatron-LM's
``mp_rank_TT_EEE``), a resume at EP2 that reproduces the uninterrupted run exactly, and
tools/checkpoint_util.py converting between expert-parallel sizes."""
import os

import pytest

from tests.dist_utils import run_distributed
from tests.training.helpers import run_tiny

MOE = ("--hidden-dropout", "0", "--attention-dropout", "0", "--num-experts", "4",
       "--moe-router-topk", "2", "--moe-train-capacity-factor", "1.0",
       "--moe-min-capacity", "0", "--eval-iters", "1")


def _worker(rank, world_size, ckpt):
    ep = ("--expert-model-parallel-size", "2", "--use-distributed-optimizer")
    straight = run_tiny(*MOE, *ep, iters=4)
    run_tiny(*MOE, *ep, "--save", ckpt, "--save-interval", "2", "--exit-interval", "2", iters=4)
    resumed = run_tiny(*MOE, *ep, "--load", ckpt, iters=4)
    return straight.history, resumed.history


@pytest.fixture(scope="module")
def ep2_run(tmp_path_factory):
    """(checkpoint folder, per-rank (straight, resumed) histories) of the EP2 runs."""
    ckpt = str(tmp_path_factory.mktemp("ep2") / "ckpt")
    return ckpt, run_distributed(_worker, 2, ckpt, timeout_s=400)


def test_expert_parallel_pretrain_matches_and_resumes(ep2_run):
    reference = run_tiny(*MOE, iters=4)
    ckpt, results = ep2_run
    for straight, resumed in results:
        assert [l for _, l in straight] == pytest.approx([l for _, l in reference.history],
                                                         rel=1e-5)
        assert resumed == straight[2:]
    assert sorted(os.listdir(os.path.join(ckpt, "iter_0000002"))) == [
        "mp_rank_00_000", "mp_rank_00_001"]


def test_checkpoint_util_converts_expert_parallel_sizes(ep2_run, tmp_path):
    """EP2 -> EP1 -> EP2 gives back the same files' weights, and the EP1 checkpoint
    continues in one process with the loss the EP2 run had at that step."""
    import torch
    from tests.tools.tool_loader import load_tool
    util = load_tool("checkpoint_util")
    ckpt, results = ep2_run
    straight = results[0][0]
    ep1, back = str(tmp_path / "ep1"), str(tmp_path / "ep2_again")
    util.main(["--load-dir", ckpt, "--save-dir", ep1, "--target-tensor-parallel-size", "1",
               "--target-pipeline-parallel-size", "1", "--target-expert-parallel-size", "1"])
    assert os.listdir(os.path.join(ep1, "iter_0000002")) == ["mp_rank_00"]
    util.main(["--load-dir", ep1, "--save-dir", back, "--target-tensor-parallel-size", "1",
               "--target-pipeline-parallel-size", "1", "--target-expert-parallel-size", "2"])
    for rank in ("000", "001"):
        def model(root):
            path = os.path.join(root, "iter_0000002", f"mp_rank_00_{rank}", "model_optim_rng.pt")
            return torch.load(path, weights_only=False)["model"]
        original, again = model(ckpt), model(back)
        assert original.keys() == again.keys()
        assert all(torch.equal(original[k], again[k]) for k in original)
    continued = run_tiny(*MOE, "--load", ep1, "--no-load-optim", "--no-load-rng", iters=3)
    assert continued.history[0][1] == pytest.approx(straight[2][1], rel=1e-5)
