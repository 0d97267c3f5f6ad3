"""--async-save: training goes on while a checkpoint is written; each one is published
only once written (the run waits for the last before it exits); kill -9 during a write
leaves the previous checkpoint the tracker's, the partial ``iter_X.tmp`` is never
trusted (removed at the next start) and the resume from the previous one is bit-exact."""
from __future__ import annotations

import os
import re
import signal
import threading

import pretrain_gpt
from megatron.checkpointing import read_tracker
from tests.reliability.helpers import FAULTY, finish, gpt_flags, launch

ASYNC = ("--ckpt-format", "torch_dist", "--async-save", "--save-interval", "2")


def _kill_at_line(proc, pattern: str, limit_s: float = 300.0) -> bool:
    """kill -9 ``proc``'s group once its stdout prints a line matching ``pattern``
    (or after ``limit_s``: a hang fails the test, not the session). True if it matched."""
    watchdog = threading.Timer(limit_s, lambda: os.killpg(proc.pid, signal.SIGKILL))
    watchdog.start()
    try:
        for line in proc.stdout:
            if re.search(pattern, line):
                os.killpg(proc.pid, signal.SIGKILL)
                return True
        return False
    finally:
        watchdog.cancel()


def test_kill_9_during_an_async_save_keeps_the_previous_checkpoint(corpus, tmp_path):
    straight_dir = str(tmp_path / "straight")
    straight = pretrain_gpt.main(gpt_flags(corpus, *ASYNC, "--save", straight_dir, iters=8))
    assert read_tracker(straight_dir) == 8           # the last save, waited for at exit
    assert sorted(n for n in os.listdir(straight_dir) if n.startswith("iter_")) == [
        f"iter_{i:07d}" for i in (2, 4, 6, 8)]

    folder = str(tmp_path / "killed")
    proc = launch([FAULTY, *gpt_flags(corpus, *ASYNC, "--save", folder, iters=8)],
                  "stall-save:4")
    # iteration 5 logged: training went on while iteration 4's save was being written
    matched = _kill_at_line(proc, r"iteration\s+5/")
    code, _, err = finish(proc)
    assert matched and code == -signal.SIGKILL, err[-3000:]
    assert read_tracker(folder) == 2
    assert os.path.isdir(os.path.join(folder, "iter_0000004.tmp"))
    assert not os.path.exists(os.path.join(folder, "iter_0000004"))

    resumed = pretrain_gpt.main(gpt_flags(corpus, *ASYNC, "--load", folder, "--save", folder,
                                          iters=8))
    assert [it for it, _ in resumed.history] == [3, 4, 5, 6, 7, 8]
    assert resumed.history == straight.history[2:]     # bit-identical from iteration 2
    assert not os.path.exists(os.path.join(folder, "iter_0000004.tmp"))
    assert read_tracker(folder) == 8
