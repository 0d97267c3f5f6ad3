"""--ckpt-format torch_dist at the same layout: the folder it writes, bit-exact resume
through pretrain(), a damaged shard or index named in one line, --ckpt-fallback."""
from __future__ import annotations

import os
import shutil

import pytest
import torch

from megatron.checkpointing import read_tracker
from megatron.errors import CheckpointError
from tests.reliability.helpers import same_state
from tests.training.helpers import run_tiny

DIST = ("--ckpt-format", "torch_dist")


@pytest.fixture(scope="module")
def straight():
    return run_tiny(iters=6)


def test_exact_resume(tmp_path, straight):
    """6 steps straight == 3 steps, a torch_dist save, a new run loading it, 3 more steps
    (dropout on: the RNG states are restored too; bf16 and the distributed optimizer:
    the converter test below)."""
    ckpt = str(tmp_path / "ckpt")
    first = run_tiny(*DIST, "--save", ckpt, "--exit-interval", "3", iters=6)
    folder = os.path.join(ckpt, "iter_0000003")
    assert sorted(os.listdir(folder)) == [".metadata", "__0_0.distcp", "mp_rank_00"]
    assert not any(n.endswith(".tmp") for n in os.listdir(ckpt))
    resumed = run_tiny(*DIST, "--load", ckpt, "--save", ckpt, iters=6)
    assert first.history + resumed.history == straight.history       # bit-identical
    assert resumed.last_validation == straight.last_validation
    assert read_tracker(ckpt) == 6


def test_an_early_exit_waits_for_the_async_save_in_flight(tmp_path, straight):
    """--exit-interval (the path --exit-signal-handler takes): the save started at 2 and
    the exit's save at 3 are both written and published before pretrain() returns."""
    ckpt = str(tmp_path / "ckpt")
    first = run_tiny(*DIST, "--async-save", "--save", ckpt, "--save-interval", "2",
                     "--exit-interval", "3", iters=6)
    assert read_tracker(ckpt) == 3
    assert sorted(n for n in os.listdir(ckpt) if n != "run.lock") == [
        "iter_0000002", "iter_0000003", "latest_checkpointed_iteration.txt"]
    resumed = run_tiny(*DIST, "--async-save", "--load", ckpt, "--save", ckpt, iters=6)
    assert first.history + resumed.history == straight.history
    assert read_tracker(ckpt) == 6


@pytest.fixture(scope="module")
def two_saves(tmp_path_factory) -> str:
    """torch_dist checkpoints at iterations 2 and 4 (each test damages a copy)."""
    ckpt = str(tmp_path_factory.mktemp("two_saves") / "ckpt")
    run_tiny(*DIST, "--save", ckpt, "--save-interval", "2", iters=4)
    return ckpt


@pytest.mark.parametrize("damage", ["truncated shard", "missing shard", "missing index"])
def test_a_damaged_checkpoint_is_named_and_fallback_resumes(tmp_path, straight, two_saves,
                                                            damage):
    ckpt = str(tmp_path / "ckpt")
    shutil.copytree(two_saves, ckpt)
    newest = os.path.join(ckpt, "iter_0000004")
    shard, index = os.path.join(newest, "__0_0.distcp"), os.path.join(newest, ".metadata")
    if damage == "truncated shard":
        with open(shard, "r+b") as f:
            f.truncate(os.path.getsize(shard) // 2)
        named, reason = shard, "cannot be read (cut short"
    elif damage == "missing shard":
        os.remove(shard)
        named, reason = shard, "file not found"
    else:
        os.remove(index)
        named, reason = index, "file not found"
    with pytest.raises(CheckpointError) as err:
        run_tiny("--load", ckpt, iters=6)
    message = str(err.value)
    assert "\n" not in message and f"{named}: {reason}" in message
    assert "complete iterations" in message and ": 2;" in message and "--ckpt-fallback" in message
    resumed = run_tiny("--load", ckpt, "--ckpt-fallback", iters=6)
    assert resumed.history == straight.history[2:]     # from iteration 2, bit-identical


def test_an_fsdp2_run_refuses_a_torch_dist_checkpoint_naming_the_conversion(two_saves,
                                                                           monkeypatch):
    """torch_dist does not describe FSDP2's sharded parameters yet: a run whose chunks are
    fully sharded stops at the load with the converter to use (the chunk's sharding is
    faked here; the flag-level refusal is in tests/parallel/test_fsdp2.py)."""
    from types import SimpleNamespace
    from megatron.checkpointing import save_load
    monkeypatch.setattr(save_load, "fsdp", SimpleNamespace(is_fully_sharded=lambda m: True))
    with pytest.raises(CheckpointError) as err:
        run_tiny("--load", two_saves, iters=6)
    message = str(err.value)
    assert "\n" not in message and "an FSDP2 run cannot load yet" in message
    assert "--ckpt-convert-format torch" in message


def test_async_save_is_refused_without_torch_dist(capsys):
    with pytest.raises(SystemExit):
        run_tiny("--async-save", "--save", "/nonexistent/never", iters=2)
    assert "--async-save needs --ckpt-format torch_dist" in capsys.readouterr().err


def _rank_files(folder: str) -> dict:
    """The rank folder's files of an iteration folder, loaded."""
    rank = os.path.join(folder, "mp_rank_00")
    return {n: torch.load(os.path.join(rank, n), weights_only=False)
            for n in sorted(os.listdir(rank))}


@pytest.mark.parametrize("extra", [(), ("--bf16", "--use-distributed-optimizer")],
                         ids=["fp32", "bf16+distopt"])
def test_convert_torch_to_torch_dist_and_back_is_lossless(tmp_path, straight, extra):
    """--ckpt-convert-format: torch -> torch_dist -> torch gives the same files (model,
    optimizer, its ZeRO-1 shard, RNG, scheduler, extra state), and the torch_dist one
    resumes bit-exactly."""
    straight = run_tiny(*extra, iters=6) if extra else straight
    original = str(tmp_path / "torch")
    first = run_tiny(*extra, "--save", original, "--exit-interval", "3", iters=6)
    run_tiny(*extra, "--load", original, "--ckpt-convert-format", "torch_dist",
             "--ckpt-convert-save", str(tmp_path / "out"), iters=6)
    dist_dir = str(tmp_path / "out" / "torch_dist")
    assert read_tracker(dist_dir) == 3
    assert os.path.isfile(os.path.join(dist_dir, "iter_0000003", ".metadata"))
    run_tiny(*extra, "--load", dist_dir, "--ckpt-convert-format", "torch",
             "--ckpt-convert-save", str(tmp_path / "back"), iters=6)
    before = _rank_files(os.path.join(original, "iter_0000003"))
    after = _rank_files(os.path.join(tmp_path, "back", "torch", "iter_0000003"))
    assert before.keys() == after.keys()
    for name in before:
        saved, again = before[name], after[name]
        if name == "model_optim_rng.pt":
            saved.pop("run_config"), again.pop("run_config")   # the converting runs' configs
        same_state(saved, again, name)
    resumed = run_tiny(*extra, *DIST, "--load", dist_dir, iters=6)
    assert first.history + resumed.history == straight.history


def test_convert_refuses_an_empty_load_or_a_used_target(tmp_path, two_saves):
    with pytest.raises(CheckpointError, match="holds no checkpoint to convert"):
        run_tiny("--load", str(tmp_path / "empty"), "--ckpt-convert-format", "torch",
                 "--ckpt-convert-save", str(tmp_path / "out"), iters=4)
    os.makedirs(tmp_path / "out")
    shutil.copytree(two_saves, tmp_path / "out" / "torch")   # another run's checkpoints
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        run_tiny("--load", two_saves, "--ckpt-convert-format", "torch",
                 "--ckpt-convert-save", str(tmp_path / "out"), iters=4)
