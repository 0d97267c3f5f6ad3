"""Preemption: ``--exit-signal-handler`` (Megatron's flag).

With the flag, SIGTERM (what schedulers send before they kill a job) and SIGINT (Ctrl-C)
only record that a signal came; the training loop asks :func:`exit_requested` at the end
of every step, all ranks agree (an all-reduce MAX, so a signal that reached one rank stops
them all at the same step), and the loop saves a checkpoint and returns normally, so the
process exits 0 and a run started with ``--load`` resumes exactly. A second SIGINT raises
``KeyboardInterrupt`` at once, for a person who does not want to wait for the step.

Signals are process-wide, so the handler state is too (one per process). ``install`` /
``uninstall`` bracket ``pretrain()``.
"""
from __future__ import annotations

import signal
import sys

import torch
import torch.distributed as dist

from megatron.core.devices import collective_device

HANDLED = (signal.SIGTERM, signal.SIGINT)

_previous: dict[int, object] = {}   # signal -> handler in place before install()
_received: list[int] = []           # signals received since install()


def _on_signal(signum: int, frame) -> None:
    del frame
    if signum == signal.SIGINT and signal.SIGINT in _received:
        raise KeyboardInterrupt
    _received.append(signum)
    print(f" > received {signal.Signals(signum).name}: saving a checkpoint after this step, "
          "then exiting (--exit-signal-handler)", file=sys.stderr, flush=True)


def install(enabled: bool) -> None:
    """Take over SIGTERM / SIGINT when ``enabled`` (else leave them alone)."""
    uninstall()
    if not enabled:
        return
    for signum in HANDLED:
        _previous[signum] = signal.signal(signum, _on_signal)


def uninstall() -> None:
    """Put back the handlers ``install`` replaced and forget received signals."""
    for signum, handler in _previous.items():
        signal.signal(signum, handler)
    _previous.clear()
    _received.clear()


def ignore_in_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: workers ignore SIGTERM / SIGINT.

    A scheduler (or Ctrl-C at a terminal) signals the whole process group; a worker that
    died of it would break the step the main process still has to finish and save. The
    workers exit with the main process as usual.
    """
    del worker_id
    for signum in HANDLED:
        signal.signal(signum, signal.SIG_IGN)


def exit_requested() -> bool:
    """Whether any rank received a handled signal (collective when distributed: every rank
    calls it at the same point of every step while the handler is installed)."""
    if not _previous:
        return False
    flag = float(bool(_received))
    if dist.is_available() and dist.is_initialized():
        tensor = torch.tensor([flag], device=collective_device())
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        flag = tensor.item()
    return flag > 0
