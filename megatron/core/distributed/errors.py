"""Name the rank and the step when a distributed training step fails.

A collective that times out or loses a peer raises deep inside torch.distributed with a
message that says neither which rank saw it nor at which iteration. Wrapping the step::

    with collective_context(iteration):
        losses = forward_backward_func(...)
        finalize_model_grads(model)
        optimizer.step()

re-raises any exception as ``RuntimeError("rank 3: step 120: <original message>")`` with
the original chained as ``__cause__``. Together with the process-group timeout
(``init_process_group(timeout=...)``, ``--distributed-timeout-minutes``) a dead rank makes
the others fail with a clear error instead of hanging forever.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch.distributed as dist


class DistributedStepError(RuntimeError):
    """A training step failed on this rank; the message names the rank and the step."""

    def __init__(self, rank: int, step: int | str, message: str):
        super().__init__(f"rank {rank}: step {step}: {message}")
        self.rank = rank
        self.step = step


def global_rank() -> int:
    """This process's global rank (from torch.distributed, else the RANK env var, else 0)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


@contextlib.contextmanager
def collective_context(step: int | str) -> Iterator[None]:
    """Re-raise any exception inside the block as a ``DistributedStepError``.

    Exceptions that already name a rank and step (nested contexts) pass through unchanged;
    ``KeyboardInterrupt`` is never wrapped.

    Args:
        step: the iteration number (or a label such as ``"eval 100"``).
    """
    try:
        yield
    except DistributedStepError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure gets the rank and step
        raise DistributedStepError(global_rank(), step, f"{type(exc).__name__}: {exc}") from exc
