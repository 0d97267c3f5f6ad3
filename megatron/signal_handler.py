"""Preemption: ``--exit-signal-handler`` (Megatron's flag).

With the flag, SIGTERM (what schedulers send before they kill a job) and SIGINT (Ctrl-C)
only record that a signal came; the training loop asks :func:`exit_requested` at the end
of every step, all ranks agree (an all-reduce MAX, so a signal that reached one rank stops
them all at the same step), and the loop saves a checkpoint and returns normally, so the
process exits 0 and a run started with ``--load`` resumes exactly. A second SIGINT raises
``KeyboardInterrupt`` at once, for a person who does not want to wait for the step.
Without the flag both signals keep their default effect (SIGTERM ends the process,
SIGINT raises ``KeyboardInterrupt``), in the DataLoader workers too.

Signals are process-wide, so the handler state is too (one per process). ``install`` /
``uninstall`` bracket ``pretrain()``.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.util
import os
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


def worker_init_fn(shield_workers: bool):
    """The DataLoader ``worker_init_fn`` for a run with (``shield_workers``) or without
    ``--exit-signal-handler``.

    With the handler a scheduler's SIGTERM (or a terminal's Ctrl-C) reaches the whole
    process group; a worker that died of it would break the step the main process still
    has to finish and save, so the workers ignore both signals. Python's exit handlers
    stop daemonic children with SIGTERM and then wait for them, which such a worker
    ignores, so an exit hook (registered here, run before that) kills them with SIGKILL
    instead: an exit after an exception can never hang on a worker.
    Without the handler the workers keep the default signal effects.
    """
    if not shield_workers:
        return None
    _kill_daemonic_children_at_exit()
    return _ignore_signals_in_worker


def _ignore_signals_in_worker(worker_id: int) -> None:
    del worker_id
    for signum in HANDLED:
        signal.signal(signum, signal.SIG_IGN)


_exit_hook_pid: list[int] = []   # the process that registered the exit hook


def _kill_daemonic_children_at_exit() -> None:
    """Once per process. A multiprocessing finalizer of priority >= 0 runs before
    multiprocessing terminates and joins the daemonic children at exit: at interpreter
    exit in a main process, and at the end of a rank that multiprocessing started itself
    (which never runs ``atexit`` hooks). Forked children start with no finalizers."""
    if _exit_hook_pid != [os.getpid()]:
        _exit_hook_pid[:] = [os.getpid()]
        multiprocessing.util.Finalize(None, _kill_daemonic_children, exitpriority=10)


def _kill_daemonic_children() -> None:
    # torch's SIGCHLD handler would report each killed worker as a failure
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    children = [c for c in multiprocessing.active_children() if c.daemon]
    for child in children:
        child.kill()
    for child in children:
        child.join(timeout=5)


def exit_reason() -> str:
    """What stopped the run, for the exit line: the signal this rank received, else a
    signal that reached another rank."""
    if _received:
        return f"received {signal.Signals(_received[0]).name} (--exit-signal-handler)"
    return "another rank received a signal (--exit-signal-handler)"


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
