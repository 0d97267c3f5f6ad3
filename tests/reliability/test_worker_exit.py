"""DataLoader workers that ignore SIGTERM (--exit-signal-handler) never hold up an exit:
multiprocessing's exit handler sends daemonic children SIGTERM and then waits for them,
in a main process at interpreter exit and at the end of a process multiprocessing started
(a rank spawned by a launcher or by these tests); the hook signal_handler.worker_init_fn
registers kills them first. Here the loader's iterator stays alive to the end, as the
traceback of an uncaught exception keeps it."""
from __future__ import annotations

import multiprocessing
import subprocess
import sys

import torch

from megatron.data.data_loader import build_pretraining_data_loader
from tests.reliability.helpers import ROOT

_held = []


class _Numbers(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> dict:
        return {"text": [i, i + 1]}


def hold_shielded_workers() -> None:
    """Start two shielded, prefetching workers and keep their iterator alive."""
    loader = build_pretraining_data_loader(_Numbers(), 0, 2, 0, 1, num_workers=2,
                                           shield_workers=True)
    _held.append(iter(loader))
    next(_held[0])


def test_a_process_started_by_multiprocessing_exits_with_shielded_workers_alive():
    proc = multiprocessing.get_context("spawn").Process(target=hold_shielded_workers)
    proc.start()
    proc.join(timeout=60)
    hung = proc.is_alive()
    if hung:
        proc.kill()
    assert not hung and proc.exitcode == 0


def test_a_main_process_exits_after_an_uncaught_exception_with_shielded_workers_alive():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from tests.reliability.test_worker_exit import hold_shielded_workers; "
            "hold_shielded_workers(); raise RuntimeError('uncaught')")
    proc = subprocess.run([sys.executable, "-c", code, ROOT], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 1 and "RuntimeError: uncaught" in proc.stderr
