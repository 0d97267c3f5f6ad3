"""Run a function on N gloo CPU ranks, for distributed tests.

Every call gets a fresh ``file://`` rendezvous in its own temporary directory, so tests
never share a process group. Each rank runs with ``OMP_NUM_THREADS=1`` (the machine is
shared), and the whole run has a wall-clock limit: ranks still alive after it are killed
and the call raises instead of hanging the test session.

Usage::

    def _worker(rank, world_size, scale):       # module level, so spawn can pickle it
        t = torch.ones(1) * rank * scale
        torch.distributed.all_reduce(t)
        return t.item()

    results = run_distributed(_worker, 2, 3.0)  # [3.0, 3.0]
"""
from __future__ import annotations

import datetime
import io
import os
import queue
import tempfile
import traceback
from typing import Any, Callable

import torch
import torch.multiprocessing as mp


class DistributedTestError(RuntimeError):
    """A rank raised, died, or the run went past its time limit.

    Attributes:
        outcomes: ``{rank: (ok, payload)}`` for every rank that reported (the return
            value if ok, else the formatted exception), so a test can inspect the others.
    """

    def __init__(self, message: str, outcomes: dict[int, tuple[bool, Any]]):
        super().__init__(message)
        self.outcomes = outcomes


def _rank_main(fn: Callable, rank: int, world_size: int, init_file: str,
               pg_timeout_s: float, results: Any, args: tuple, kwargs: dict) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    # gloo ranks train on the CPU: on a machine with GPUs, hide them (the model would go
    # to the GPU while the gloo groups take CPU tensors)
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    torch.set_num_threads(1)
    # Some code (torchrun-style launch paths) reads these; keep them consistent.
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world_size),
                       "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world_size)})
    try:
        torch.distributed.init_process_group(
            "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
            timeout=datetime.timedelta(seconds=pg_timeout_s))
        out = fn(rank, world_size, *args, **kwargs)
        # Serialised to plain bytes: a tensor put on the queue as-is travels as a shared
        # memory handle that dies with this process, racing the parent's read.
        buffer = io.BytesIO()
        torch.save(out, buffer)
        results.put((rank, True, buffer.getvalue()))
    except BaseException as exc:  # report everything, including SystemExit
        results.put((rank, False, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        if torch.distributed.is_initialized():
            try:
                torch.distributed.destroy_process_group()
            except Exception:  # a broken group cannot always be torn down cleanly
                pass


def run_distributed(fn: Callable, world_size: int, *args: Any, timeout_s: float = 120.0,
                    pg_timeout_s: float = 30.0, **kwargs: Any) -> list[Any]:
    """Run ``fn(rank, world_size, *args, **kwargs)`` on ``world_size`` spawned gloo ranks.

    Args:
        fn: a module-level (picklable) function; its return value must be picklable.
        world_size: number of ranks to spawn.
        timeout_s: wall-clock limit for the whole run; ranks still running are killed.
        pg_timeout_s: timeout of the process group's collectives.

    Returns:
        The return values of ``fn``, indexed by rank.

    Raises:
        DistributedTestError: naming the first rank that failed (with its traceback), or
            the ranks that exited without a result, or the ranks still running at the limit.
    """
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="dist_test_") as tmp:
        init_file = os.path.join(tmp, "rendezvous")
        # Not daemonic: ranks may start children of their own (DataLoader workers).
        procs = [ctx.Process(target=_rank_main, daemon=False,
                             args=(fn, r, world_size, init_file, pg_timeout_s, results,
                                   args, kwargs))
                 for r in range(world_size)]
        try:
            for p in procs:
                p.start()
            outcomes = _collect(procs, results, world_size, timeout_s)
        finally:  # nothing may outlive the call, whatever happened (even Ctrl-C)
            for p in procs:
                if p.pid is not None:
                    p.join(timeout=5)
                    if p.is_alive():
                        p.kill()
                        p.join(timeout=5)
    return _check(outcomes, procs, world_size, timeout_s)


def _collect(procs: list, results: Any, world_size: int, timeout_s: float) -> list[tuple]:
    """Gather (rank, ok, payload) tuples until all ranks reported, died, or time ran out."""
    outcomes: list[tuple] = []
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=timeout_s)
    while len(outcomes) < world_size and datetime.datetime.now() < deadline:
        try:
            outcomes.append(results.get(timeout=0.2))
        except queue.Empty:
            reported = {o[0] for o in outcomes}
            if all(not p.is_alive() for r, p in enumerate(procs) if r not in reported):
                # Drain anything that arrived between the get() and the liveness check.
                try:
                    while True:
                        outcomes.append(results.get(timeout=0.5))
                except queue.Empty:
                    break
    for p in procs:  # past the deadline, or done: nothing may be left running
        if p.is_alive() and len(outcomes) < world_size:
            p.kill()
    return outcomes


def _check(outcomes: list[tuple], procs: list, world_size: int, timeout_s: float) -> list[Any]:
    by_rank = {rank: (ok, torch.load(io.BytesIO(payload), weights_only=False) if ok else payload)
               for rank, ok, payload in outcomes}
    failures = [(rank, msg) for rank, ok, msg in outcomes if not ok]
    if failures:
        rank, msg = failures[0]
        others = ", ".join(str(r) for r, _ in failures[1:])
        extra = f" (ranks {others} failed too)" if others else ""
        raise DistributedTestError(f"rank {rank} of {world_size} failed{extra}:\n{msg}", by_rank)
    reported = {o[0] for o in outcomes}
    missing = [r for r in range(world_size) if r not in reported]
    if missing:
        codes = {r: procs[r].exitcode for r in missing}
        raise DistributedTestError(
            f"ranks {missing} gave no result within {timeout_s:.0f}s (exit codes {codes}; "
            "None means it was still running and was killed)", by_rank)
    return [torch.load(io.BytesIO(payload), weights_only=False)
            for _, _, payload in sorted(outcomes, key=lambda o: o[0])]


def isolated_jobs(rank: int, world_size: int, jobs: list[tuple]) -> list:
    """Run several ``(worker, *args)`` jobs in one spawn (starting ranks is the slow part):
    ``worker(rank, world_size, *args)`` each, results in order, each job starting from no
    model-parallel groups and an empty tensor-parallel RNG tracker."""
    from megatron.core import parallel_state, tensor_parallel
    out = []
    for worker, *args in jobs:
        out.append(worker(rank, world_size, *args))
        if parallel_state.model_parallel_is_initialized():
            parallel_state.destroy_model_parallel()
        tensor_parallel.get_rng_tracker().reset()
    return out
