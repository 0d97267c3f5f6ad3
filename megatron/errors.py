"""The project's own error types, and the one-line report the entry points print.

Problems a user can fix (bad input files, bad flags or config files, an impossible
parallel layout, an unreadable checkpoint) raise a ``MegatronError`` subclass. Each also
derives from the built-in type such code raised before (``ValueError``,
``FileNotFoundError``, ...), so ``except ValueError`` callers keep working.

``pretrain_gpt.py`` / ``pretrain_bert.py`` run their ``main`` through :func:`run_main`:
a ``MegatronError`` prints ``error: <message>`` once and exits 1, with no traceback
(``MEGATRON_TRACEBACK=1`` shows it). Any other exception keeps its traceback.
"""
from __future__ import annotations

import os
import sys
from typing import Callable


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
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def format_error(exc: MegatronError, rank: int) -> str | None:
    """The line ``rank`` prints for ``exc``, or None when another rank prints it."""
    message = str(exc).strip() or type(exc).__name__
    if exc.same_on_all_ranks:
        return f"error: {message}" if rank == 0 else None
    return f"error: rank {rank}: {message}"


def run_main(main: Callable[[], object]) -> None:
    """Call ``main()``; turn a ``MegatronError`` into one ``error:`` line and exit 1."""
    try:
        main()
    except MegatronError as exc:
        if os.environ.get("MEGATRON_TRACEBACK") == "1":
            raise
        line = format_error(exc, _rank())
        if line is not None:
            print(line, file=sys.stderr, flush=True)
        raise SystemExit(1) from None
