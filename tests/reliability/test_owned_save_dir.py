"""A run owns its --save folder: a second live run is refused naming the holder, a stale
lock is taken over, checkpoints the run did not load are never replaced without
--overwrite-checkpoints, a missing tracker beside checkpoints is refused like a damaged
one, and an unwritable --save is found before step 1."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from megatron.checkpointing import TRACKER, read_tracker
from megatron.errors import CheckpointError
from megatron.checkpointing.lock import LOCK_NAME
from tests.reliability.helpers import ROOT
from tests.training.helpers import run_tiny

HOLD = ("import sys, time; sys.path.insert(0, sys.argv[2]); "
        "from megatron.checkpointing.lock import SaveDirLock; SaveDirLock(sys.argv[1]).acquire(); "
        "print('locked', flush=True); time.sleep(600)")


def _snapshot(folder) -> dict[str, bytes]:
    """Every file's bytes under ``folder`` except the lock (what must not change)."""
    out = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            if name != LOCK_NAME:
                path = os.path.join(dirpath, name)
                out[os.path.relpath(path, folder)] = open(path, "rb").read()
    return out


def test_a_second_run_is_refused_naming_the_holder_and_a_stale_lock_is_taken_over(
        tmp_path, capsys):
    save = tmp_path / "ckpt"
    save.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(save), ROOT],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CheckpointError) as err:
            run_tiny("--save", str(save), iters=2)
        assert f"pid {holder.pid} on host" in str(err.value) and "another run" in str(err.value)
        assert not any(n.startswith("iter_") for n in os.listdir(save))   # nothing written
    finally:
        holder.send_signal(signal.SIGKILL)      # dies holding it: the kernel frees the lock
        holder.wait()
    capsys.readouterr()
    run_tiny("--save", str(save), "--eval-iters", "0", iters=2)
    assert f"taking over the lock of an ended run (pid {holder.pid}" in capsys.readouterr().out
    assert read_tracker(str(save)) == 2
    assert (save / LOCK_NAME).read_text() == ""          # released when the run ended


def test_checkpoints_the_run_did_not_load_are_never_replaced(tmp_path):
    save = str(tmp_path / "ckpt")
    run_tiny("--save", save, "--save-interval", "2", "--eval-iters", "0", iters=4)
    before = _snapshot(save)
    with pytest.raises(CheckpointError, match=r"already holds checkpoints this run did not "
                       r"load \(iteration folders 2, 4, complete: 2, 4; tracker present\).*"
                       r"--overwrite-checkpoints"):
        run_tiny("--save", save, "--eval-iters", "0", iters=2)
    os.remove(os.path.join(save, TRACKER))
    for flags in (("--save", save), ("--load", save, "--save", save), ("--load", save)):
        with pytest.raises(CheckpointError, match="tracker|already holds") as err:
            run_tiny(*flags, "--eval-iters", "0", iters=6)
        if "--load" in flags:
            assert "tracker file latest_checkpointed_iteration.txt is missing" in str(err.value)
            assert "iteration folders 2, 4" in str(err.value) and "echo 4 >" in str(err.value)
    assert _snapshot(save) == {k: v for k, v in before.items() if k != TRACKER}
    run_tiny("--save", save, "--overwrite-checkpoints", "--save-interval", "2",
             "--eval-iters", "0", iters=2)     # the explicit flag: iteration 2 replaced
    assert read_tracker(save) == 2


def test_an_unwritable_save_is_found_before_step_1(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(CheckpointError, match=r"--save .*file/ckpt: cannot create or write"):
        run_tiny("--save", str(blocker / "ckpt"), iters=2)
    assert "iteration " not in capsys.readouterr().out      # no step ran
