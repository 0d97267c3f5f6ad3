"""The project's own error types, and how the entry points end a failed process.

Problems a user can fix (bad input files, bad flags or config files, an impossible
parallel layout, an unreadable checkpoint) raise a ``MegatronError`` subclass. Each also
derives from the built-in type such code raised before (``ValueError``,
``FileNotFoundError``, ...), so ``except ValueError`` callers keep working.

``pretrain_gpt.py`` / ``pretrain_bert.py`` and the tools run their ``main`` through
:func:`run_main`: any exception ends the process with one ``error:`` line and no traceback
(``MEGATRON_TRACEBACK=1`` prints the traceback too). A ``MegatronError`` is printed as its
message (once, by rank 0, when every rank raises it alike); any other exception names
this rank and its type. Ctrl-C prints ``error: interrupted`` and exits 130. The exit
itself cannot hang: child processes (DataLoader workers, which ignore SIGTERM under
``--exit-signal-handler``) are killed and the process ends with ``os._exit`` rather than
waiting in Python's exit handlers for workers, threads or a broken process group. On
other ranks the dead peer breaks the next collective (gloo at once; under torchrun the
agent stops the others), and each prints its own line.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import traceback
from typing import Callable

TRACEBACK_ENV = "MEGATRON_TRACEBACK"


class MegatronError(Exception):
    """A problem the user can fix, reported as one line.

    Attributes:
        same_on_all_ranks: every rank raises this error with the same message (flags,
            layout, shared files), so only rank 0 prints it. When False the error is this
            rank's own and it is printed with the rank number.
    """

    same_on_all_ranks = True


class BadInputError(MegatronError, ValueError):
    """A data file, token store, tokenizer file or analyzer index is missing or damaged."""


class MissingInputError(BadInputError, FileNotFoundError):
    """An input file or folder does not exist."""


class BadConfigError(MegatronError, ValueError):
    """A flag or a config file (JSON) is invalid or contradicts another."""


class LayoutError(MegatronError, ValueError):
    """The parallel layout does not fit the world size or the model."""


class CheckpointError(MegatronError, ValueError):
    """A checkpoint cannot be read or does not fit this run."""


def _rank() -> int:
    """This process's global rank: torch.distributed's, else the launcher's ``RANK``."""
    if "torch.distributed" in sys.modules:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def agreed_problems(problem: str | None) -> list[str]:
    """Every rank's ``problem`` (None where it has none), in rank order, on every rank
    (collective when torch.distributed is initialised), so all ranks decide alike."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return [problem] if problem else []
    problems: list = [None] * dist.get_world_size()
    dist.all_gather_object(problems, problem)
    return [p for p in problems if p]


def raise_agreed(problem: str | None, error_type: type[MegatronError]) -> None:
    """Collective: raise ``error_type`` on every rank, with the first rank's problem, when
    any rank has one (it is then printed once, by rank 0)."""
    problems = agreed_problems(problem)
    if problems:
        raise error_type(problems[0])


def format_error(exc: BaseException, rank: int) -> str | None:
    """The line ``rank`` prints for ``exc``, or None when another rank prints it.

    A ``MegatronError`` is its message; any other exception is ``rank R: Type: message``
    (an exception whose message already names the rank, such as a failed distributed
    step's, keeps its message) with a pointer to ``MEGATRON_TRACEBACK=1``.
    """
    message = str(exc).strip() or type(exc).__name__
    if isinstance(exc, MegatronError):
        if exc.same_on_all_ranks:
            return f"error: {message}" if rank == 0 else None
        return f"error: rank {rank}: {message}"
    if not message.startswith(f"rank {rank}:"):
        message = f"rank {rank}: {type(exc).__name__}: {message}"
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if len(lines) > 1:   # e.g. a DataLoader worker's error: its last line is the cause
        message = f"{lines[0]} ... {lines[-1]}"
    return f"error: {message} ({TRACEBACK_ENV}=1 shows the traceback)"


def exit_process(code: int) -> None:
    """End this process now with ``code``: flush the output, kill child processes, and
    leave through ``os._exit`` so nothing at interpreter exit can wait forever."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)   # torch's handler would raise for each
    children = multiprocessing.active_children()
    for child in children:
        child.kill()
    for child in children:   # reap them (SIGKILL is immediate): no zombie outlives us
        child.join(timeout=5)
    os._exit(code)


def run_main(main: Callable[[], object]) -> None:
    """Call ``main()``; on any exception print one ``error:`` line and end the process
    (exit 1; 130 on Ctrl-C). ``SystemExit`` (argparse, flag errors) passes through."""
    try:
        main()
    except SystemExit:
        raise
    except BaseException as exc:   # noqa: BLE001 - every failure ends here, one line
        rank = _rank()
        if os.environ.get(TRACEBACK_ENV) == "1":
            traceback.print_exc()
        if isinstance(exc, KeyboardInterrupt):
            line, code = f"error: rank {rank}: interrupted (SIGINT)", 130
        else:
            line, code = format_error(exc, rank), 1
        if line is not None:
            print(line, file=sys.stderr, flush=True)
        exit_process(code)
