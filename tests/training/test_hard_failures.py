"""First contact and hard failures: an exact TP1 -> TP2 conversion (an unconverted TP1
checkpoint at TP2 is refused with the conversion command), a damaged newest
checkpoint (named; --ckpt-fallback resumes from the previous one), stale temp folders,
and --exit-signal-handler (SIGTERM mid-run on one rank saves on all, bit-exact resume)."""
from __future__ import annotations

import os
import signal

import pytest
import torch

import pretrain_gpt
from megatron.checkpointing import read_tracker
from megatron.errors import CheckpointError
from tests.dist_utils import run_distributed
from tests.tools.tool_loader import load_tool
from tests.training.helpers import run_tiny

NO_DROPOUT = ("--hidden-dropout", "0", "--attention-dropout", "0")
# 60 real ids padded to a multiple of 128 x TP: 128 rows at TP1, 256 at TP2.
WIDE_PADDING = ("--make-vocab-size-divisible-by", "128")
_calls = {"n": 0}


def _signalling_forward_step(data_iterator, model):
    """pretrain_gpt's forward step; on rank 1 the third call sends SIGTERM to itself."""
    _calls["n"] += 1
    if _calls["n"] == 3 and torch.distributed.get_rank() == 1:
        os.kill(os.getpid(), signal.SIGTERM)
    return pretrain_gpt.forward_step(data_iterator, model)


def _two_rank_jobs(rank, world_size, converted, ckpt):
    """On 2 ranks: TP2 resume of the converted checkpoint, then DP2 straight, interrupted
    by SIGTERM on rank 1 during step 3, and resumed."""
    tp2 = run_tiny(*NO_DROPOUT, *WIDE_PADDING, "--tensor-model-parallel-size", "2",
                   "--load", converted, "--no-load-optim", "--no-load-rng", iters=6)
    straight = run_tiny(iters=6)
    _calls["n"] = 0
    cut = run_tiny("--exit-signal-handler", "--save", ckpt, iters=6,
                   forward_step=_signalling_forward_step)
    cut_at, saved = cut.iteration, read_tracker(ckpt)
    resumed = run_tiny("--load", ckpt, iters=6)
    try:   # the TP1 checkpoint itself, unconverted
        run_tiny(*NO_DROPOUT, *WIDE_PADDING, "--tensor-model-parallel-size", "2",
                 "--load", os.path.join(os.path.dirname(converted), "tp1"), iters=6)
        unconverted = None
    except CheckpointError as err:
        unconverted = str(err)
    return {"unconverted": unconverted, "tp2": tp2.history, "straight": straight.history, "cut": cut.history,
            "cut_at": cut_at, "saved": saved, "resumed": resumed.history,
            "validation": (straight.last_validation, resumed.last_validation),
            "fallback": _damaged_on_one_rank(rank, ckpt + "_tp2")}


def _damaged_on_one_rank(rank: int, ckpt: str) -> dict:
    """TP2 checkpoints at 2 and 4; only rank 1's file of iteration 4 is cut short. Both
    ranks must refuse it alike, and with --ckpt-fallback both must load iteration 2."""
    tp2 = ("--tensor-model-parallel-size", "2")
    run_tiny(*tp2, "--save", ckpt, "--save-interval", "2", iters=4)
    if rank == 1:
        path = os.path.join(ckpt, "iter_0000004", "mp_rank_01", "model_optim_rng.pt")
        with open(path, "r+b") as f:
            f.truncate(100)
    torch.distributed.barrier()
    try:
        run_tiny(*tp2, "--load", ckpt, iters=4)
        refused = None
    except CheckpointError as err:
        refused = str(err)
    fallback = run_tiny(*tp2, "--load", ckpt, "--ckpt-fallback", iters=4)
    return {"refused": refused, "resumed": [it for it, _ in fallback.history]}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    root = tmp_path_factory.mktemp("hard")
    ref_ckpt, converted = str(root / "tp1"), str(root / "tp2")
    reference = run_tiny(*NO_DROPOUT, *WIDE_PADDING, "--save", ref_ckpt, "--save-interval", "4",
                         iters=6)
    load_tool("checkpoint_util").main(
        ["--load-dir", ref_ckpt, "--save-dir", converted, "--iteration", "4",
         "--target-tensor-parallel-size", "2", "--target-pipeline-parallel-size", "1"])
    per_rank = run_distributed(_two_rank_jobs, 2, converted, str(root / "dp2"), timeout_s=400)
    return reference, converted, per_rank


def test_tp1_to_tp2_conversion_resumes_with_the_unconverted_loss(two_ranks):
    reference, converted, per_rank = two_ranks
    emb = torch.load(os.path.join(converted, "iter_0000004", "mp_rank_01", "model_optim_rng.pt"),
                     weights_only=False)["model"]["embedding.word_embeddings.weight"]
    assert emb.shape[0] == 128 and not emb.any()   # rank 1: rows 128..255, all padding
    unconverted = dict(reference.history)
    for out in per_rank:
        (it, loss), *_ = out["tp2"]
        # the step after the checkpoint: same weights, same batch, more padding rows
        assert it == 5 and loss == pytest.approx(unconverted[5], rel=1e-6, abs=1e-6)


def test_a_tp1_checkpoint_loaded_at_tp2_is_refused_with_the_conversion_command(two_ranks):
    _, converted, per_rank = two_ranks
    tp1 = os.path.join(os.path.dirname(converted), "tp1")
    for out in per_rank:     # both ranks, the same advice (no --ckpt-fallback: it cannot help)
        message = out["unconverted"]
        assert message is not None and "saved with another parallel layout" in message
        assert (f"tools/checkpoint_util.py --load-dir {tp1} --save-dir NEW_DIR "
                "--target-tensor-parallel-size 2 --target-pipeline-parallel-size 1") in message
        assert "--ckpt-fallback" not in message


def test_round_trip_tp1_tp2_tp1_is_exact(two_ranks, tmp_path):
    reference, converted, _ = two_ranks
    back = str(tmp_path / "back")
    load_tool("checkpoint_util").main(
        ["--load-dir", converted, "--save-dir", back, "--target-tensor-parallel-size", "1",
         "--target-pipeline-parallel-size", "1"])
    ref_dir = os.path.join(os.path.dirname(converted), "tp1")
    original = torch.load(os.path.join(ref_dir, "iter_0000004", "mp_rank_00",
                                       "model_optim_rng.pt"), weights_only=False)["model"]
    again = torch.load(os.path.join(back, "iter_0000004", "mp_rank_00", "model_optim_rng.pt"),
                       weights_only=False)["model"]
    assert original.keys() == again.keys()
    for key in original:
        assert torch.equal(original[key], again[key]), key


def test_sigterm_on_one_rank_saves_on_every_rank_and_resumes_bit_exactly(two_ranks):
    _, _, per_rank = two_ranks
    for out in per_rank:
        assert out["cut_at"] == out["saved"] == 3          # the step in flight finished
        assert [it for it, _ in out["resumed"]] == [4, 5, 6]
        assert out["cut"] + out["resumed"] == out["straight"]   # bit-identical losses
        straight_valid, resumed_valid = out["validation"]
        assert resumed_valid == straight_valid


def test_failed_conversion_leaves_nothing(tmp_path):
    ckpt = str(tmp_path / "ckpt")
    run_tiny("--save", ckpt, "--eval-iters", "0", "--exit-interval", "1", iters=3)
    tool = load_tool("checkpoint_util")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="does not divide --num-layers 2"):
        tool.convert(ckpt, str(out), 1, 3)
    assert not out.exists()              # validated before anything was created

    def fail(*args, **kwargs):
        raise OSError("disk full")
    real_save = torch.save
    torch.save = fail
    try:
        with pytest.raises(OSError, match="disk full"):
            tool.convert(ckpt, str(out), 1, 1)
    finally:
        torch.save = real_save
    assert not out.exists()              # no iter_X.tmp, no empty --save-dir


def test_truncated_newest_checkpoint_is_named_and_fallback_resumes(tmp_path):
    ckpt = str(tmp_path / "ckpt")
    straight = run_tiny(iters=6)
    run_tiny("--save", ckpt, "--save-interval", "2", iters=4)
    newest = os.path.join(ckpt, "iter_0000004", "mp_rank_00", "model_optim_rng.pt")
    with open(newest, "r+b") as f:
        f.truncate(os.path.getsize(newest) // 2)
    with pytest.raises(CheckpointError) as err:
        run_tiny("--load", ckpt, iters=6)
    message = str(err.value)
    assert newest in message and "cannot be read" in message
    assert "complete iterations" in message and ": 2;" in message and "--ckpt-fallback" in message
    stale = os.path.join(ckpt, "iter_0000009.tmp")
    os.makedirs(os.path.join(stale, "mp_rank_00"))
    resumed = run_tiny("--load", ckpt, "--save", ckpt, "--ckpt-fallback", iters=6)
    assert [it for it, _ in resumed.history] == [3, 4, 5, 6]
    assert resumed.history == straight.history[2:]   # bit-identical to the straight run
    assert not os.path.exists(stale)                 # removed at start-up
    assert read_tracker(ckpt) == 6


def test_a_file_damaged_on_one_rank_is_refused_or_skipped_by_all(two_ranks):
    _, _, per_rank = two_ranks
    for out in per_rank:
        refused = out["fallback"]["refused"]
        assert refused is not None and "mp_rank_01" in refused and "cannot be read" in refused
        assert out["fallback"]["resumed"] == [3, 4]   # both ranks loaded iteration 2
