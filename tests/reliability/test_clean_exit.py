"""Fault injection: a failure in each phase of a run (data loading in a worker, forward,
backward, optimizer step, save, evaluation), Ctrl-C without ``--exit-signal-handler``, and
a failure on one rank of two under torchrun. Every run uses the default ``--num-workers 2``
(prefetching workers). Each must end promptly (a hang fails the test after a generous
limit) with one ``error:`` line, leave no worker behind, and leave its last complete
checkpoint identical to the uninterrupted run's at that iteration, from which a resume is
bit-exact."""
from __future__ import annotations

import os
import signal
import time

import pytest
import torch

import pretrain_gpt
from megatron.checkpointing import read_tracker
from tests.reliability.helpers import (FAULTY, error_lines, finish, gpt_flags, group_is_gone,
                                       launch, same_state)

# phase -> (MEGATRON_TEST_FAULT, extra flags, the error line's cause, last complete iteration)
PHASES = {
    "loader": ("loader:5", (), "injected read error at sample 16", 4),
    "forward": ("forward:5", (), "injected forward failure at step 5", 4),
    "backward": ("backward:5", (), "injected backward failure at step 5", 4),
    "optimizer": ("optimizer:5", (), "gradients are NaN/inf", 4),
    # workers shielded from signals (--exit-signal-handler) must not stop the exit either
    "save": ("save:4", ("--exit-signal-handler",), "No space left on device", 2),
    "eval": ("eval", ("--exit-signal-handler",), "injected read error at sample 0", 2),
}
CONCURRENT = 3   # runs at once (the machine is small)


def _ckpt_file(folder: str, iteration: int) -> str:
    return os.path.join(folder, f"iter_{iteration:07d}", "mp_rank_00", "model_optim_rng.pt")


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
    """The uninterrupted run (in this process) and one faulty run per phase (subprocesses,
    a few at a time): ``(straight folder, straight history, {phase: (code, out, err,
    folder, group gone)})``."""
    root = tmp_path_factory.mktemp("faults")
    straight_dir = str(root / "straight")
    straight = pretrain_gpt.main(gpt_flags(corpus, "--save", straight_dir, "--save-interval", "2"))
    pending, running, results = list(PHASES.items()), [], {}
    deadline = time.monotonic() + 600
    while pending or running:
        while pending and len(running) < CONCURRENT:
            phase, (fault, extra, _, _) = pending.pop(0)
            folder = str(root / phase)
            argv = [FAULTY, *gpt_flags(corpus, "--save", folder, "--save-interval", "2", *extra)]
            running.append((phase, folder, launch(argv, fault)))
        for item in [r for r in running if r[2].poll() is not None]:   # just exited
            phase, folder, proc = item
            gone = group_is_gone(proc)      # at once: orphaned workers die within seconds
            code, out, err = finish(proc)
            results[phase] = (code, out, err, folder, gone)
            running.remove(item)
        if time.monotonic() > deadline:
            for _, _, proc in running:
                finish(proc, timeout=0.1)   # kills the group and reports the hang
        time.sleep(0.05)
    return straight_dir, straight.history, results


@pytest.mark.parametrize("phase", list(PHASES))
def test_a_failure_in_each_phase_ends_the_run_with_one_error_line(runs, phase):
    _, _, results = runs
    code, _, err, _, gone = results[phase]
    cause = PHASES[phase][2]
    lines = error_lines(err)
    assert code == 1 and len(lines) == 1 and cause in lines[0], err[-3000:]
    assert "Traceback" not in err
    assert gone, "a DataLoader worker outlived the failed run"


@pytest.mark.parametrize("phase", list(PHASES))
def test_the_last_complete_checkpoint_is_the_uninterrupted_runs(runs, phase):
    straight_dir, _, results = runs
    folder, last = results[phase][3], PHASES[phase][3]
    assert read_tracker(folder) == last
    faulty = torch.load(_ckpt_file(folder, last), weights_only=False)
    straight = torch.load(_ckpt_file(straight_dir, last), weights_only=False)
    faulty.pop("run_config"), straight.pop("run_config")   # --exit-signal-handler differs
    same_state(faulty, straight)


def test_resume_after_a_failure_is_bit_exact(runs, corpus):
    _, history, results = runs
    folder = results["forward"][3]
    resumed = pretrain_gpt.main(gpt_flags(corpus, "--load", folder, "--save", folder,
                                          "--save-interval", "2"))
    assert [it for it, _ in resumed.history] == [5, 6]
    assert resumed.history == history[4:]


def test_ctrl_c_without_the_signal_handler_exits(corpus, tmp_path):
    proc = launch([FAULTY, *gpt_flags(corpus, "--eval-iters", "0", iters=100000)])
    for line in proc.stdout:                 # wait until training runs
        if "iteration        3/" in line:
            break
    os.killpg(proc.pid, signal.SIGINT)       # a terminal's Ctrl-C reaches the whole group
    code, _, err = finish(proc)
    assert code == 130 and error_lines(err) == ["error: rank 0: interrupted (SIGINT)"], err[-3000:]
    assert group_is_gone(proc)


def test_a_failure_on_one_rank_ends_every_rank_under_torchrun(corpus, tmp_path):
    argv = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", FAULTY,
            *gpt_flags(corpus, "--distributed-backend", "gloo", "--eval-iters", "0")]
    proc = launch(argv, "forward:3:1")
    code, _, err = finish(proc)
    lines = error_lines(err)
    assert code != 0 and 1 <= len(lines) <= 2, err[-3000:]
    assert any(line.startswith("error: rank 1: step 3: RuntimeError: injected forward failure")
               for line in lines), lines
    assert group_is_gone(proc)
