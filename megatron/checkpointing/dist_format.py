"""The ``torch_dist`` checkpoint format (``--ckpt-format torch_dist``): the model and
optimizer written by ``torch.distributed.checkpoint`` as global tensors, loadable under
any tensor / pipeline / data-parallel layout (with or without the distributed optimizer).

    {root}/iter_0000100/.metadata                   DCP's index: every global tensor's
                                                    shape and saved chunks
    {root}/iter_0000100/__0_0.distcp ...            the chunks, one file per writing rank
    {root}/iter_0000100/mp_rank_00[_000]/model_optim_rng.pt
                                                    the rest, per (TP, PP) rank as in the
                                                    ``torch`` format: iteration, args, RNG,
                                                    LR scheduler, extra state, the
                                                    optimizer's non-sharded part; no model

Everything is written into ``iter_X.tmp`` and published like the ``torch`` format
(``files.publish``). :class:`AsyncSaver` (``--async-save``) copies the tensors to the CPU,
writes them in a background thread and publishes once every rank's writes are done.
"""
from __future__ import annotations

import threading
import warnings
from typing import Callable

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn

from megatron.checkpointing import dist_state
from megatron.checkpointing.dist_files import read_metadata
from megatron.checkpointing.global_tensors import GlobalTensor, LoadPlanner, SavePlanner
from megatron.errors import CheckpointError

FORMATS = ("torch", "torch_dist")
DIST_FORMAT = "torch_dist"


def sharded_state(model_chunks: list[nn.Module], optimizer) -> dict[str, GlobalTensor]:
    """What this rank writes: its pieces of the model (and optimizer, if given)."""
    placed = dist_state.placements(model_chunks)
    state = dist_state.model_tensors(placed, saving=True)
    if optimizer is not None:
        state.update(dist_state.optimizer_tensors(optimizer, placed, saving=True))
    return state


def write(state: dict[str, GlobalTensor], folder: str, process_group=None) -> None:
    """``dcp.save`` of ``state`` into ``folder`` (collective over ``process_group``)."""
    with warnings.catch_warnings():   # one process: DCP warns that it saves alone
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save(state, storage_writer=dcp.FileSystemWriter(folder), planner=SavePlanner(),
                 process_group=process_group)


def load(iter_dir: str, model_chunks: list[nn.Module], optimizer, optimizer_common: dict | None,
         ) -> None:
    """Fill the model (and, with ``optimizer_common``, the optimizer) from the global
    tensors in ``iter_dir``, resharded to this rank's layout (collective).

    Raises:
        CheckpointError: naming what is missing or cannot be read.
    """
    placed = dist_state.placements(model_chunks)
    state = dist_state.model_tensors(placed, saving=False)
    reload_masters = False
    try:
        saved = read_metadata(iter_dir).state_dict_metadata
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    if optimizer is not None and optimizer_common is not None:
        dist_state.prepare_optimizer_state(optimizer, optimizer_common)
        wanted = dist_state.optimizer_tensors(optimizer, placed, saving=False)
        masters = [k for k in wanted if k.endswith("." + dist_state.MASTER_KEY)]
        if masters and not any(k in saved for k in masters):
            reload_masters = True   # saved in fp32: the masters are the weights
            wanted = {k: v for k, v in wanted.items() if k not in masters}
        state.update(wanted)
    missing = sorted(k for k in state if k not in saved)
    if missing:
        raise CheckpointError(f"{iter_dir} holds no {missing[0]}" + (
            f" (and {len(missing) - 1} more entries)" if len(missing) > 1 else "")
            + ": it was saved from another model or optimizer (or without the optimizer "
            "state: use --no-load-optim)")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state, storage_reader=dcp.FileSystemReader(iter_dir),
                     planner=LoadPlanner(dist_state.grown_rows_ok))
    except Exception as err:   # DCP gathers every rank's failure into one exception
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{iter_dir}: the distributed checkpoint cannot be read "
                              f"({reason})") from None
    if reload_masters:
        optimizer.reload_model_params()


def read_whole_model(iter_dir: str, specs: dict) -> dict[str, torch.Tensor]:
    """The whole-model state dict (whole-model names, as ``model_split.merge_state_dicts``
    gives) of a ``torch_dist`` iteration, read in this process alone.

    Args:
        specs: ``model_split.param_specs`` of a model of the same architecture (which
            tensors were stored with their stride dimension split).
    """
    try:
        saved = read_metadata(iter_dir).state_dict_metadata
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    state = {}
    for fqn, md in saved.items():
        if fqn.startswith("model."):
            whole = torch.empty(tuple(md.size), dtype=md.properties.dtype)
            state[fqn] = GlobalTensor(tuple(md.size), {(0,) * len(md.size): whole})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, storage_reader=dcp.FileSystemReader(iter_dir), planner=LoadPlanner(),
                 no_dist=True)
    full = {}
    for fqn, tensor in state.items():
        name, whole = fqn[len("model."):], next(iter(tensor.pieces.values()))
        spec = specs.get(name)
        if spec is not None and spec.tensor_model_parallel and spec.partition_stride > 1:
            d = spec.partition_dim % (whole.dim() - 1)
            whole = whole.flatten(d, d + 1)     # [.., stride, n, ..] -> [.., stride * n, ..]
        full[name] = whole
    return full


class AsyncSaver:
    """``--async-save``: at most one checkpoint in flight, written in a background thread
    over its own gloo group (so its collectives never interleave with training's).

    ``start`` waits for the previous save, copies this rank's tensors to the CPU and
    returns; ``poll`` (every step) publishes a finished save; ``wait`` (before the next
    save and before the run exits) finishes it, raising its error on every rank.
    """

    def __init__(self) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        self.group = dist.new_group(backend="gloo") if distributed else None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._publish: Callable[[], None] | None = None
        self._what = ""

    @property
    def in_flight(self) -> bool:
        return self._thread is not None

    def start(self, state: dict[str, GlobalTensor], folder: str,
              publish: Callable[[], None], what: str) -> None:
        """Write ``state`` into ``folder`` in the background; ``publish`` runs once the
        write is complete on every rank (``what`` names the save in errors)."""
        self.wait()
        staged = {k: v.staged() for k, v in state.items()}
        self._error, self._publish, self._what = None, publish, what

        def run() -> None:
            try:
                write(staged, folder, self.group)
            except BaseException as err:   # reported by wait(), on the training thread
                self._error = err

        self._thread = threading.Thread(target=run, name="async-checkpoint-save", daemon=True)
        self._thread.start()

    def poll(self) -> None:
        """Publish the save in flight if its writes are complete (never blocks)."""
        if self._thread is not None and not self._thread.is_alive() and self._error is None:
            self._finish()

    def wait(self) -> None:
        """Block until the save in flight is written, then publish it.

        Raises:
            CheckpointError: the background write failed (DCP reports it on every rank).
        """
        if self._thread is None:
            return
        self._thread.join()
        self._finish()

    def _finish(self) -> None:
        self._thread, error, publish = None, self._error, self._publish
        self._error = self._publish = None
        if error is not None:
            raise CheckpointError(f"asynchronous save of {self._what} failed: "
                                  f"{str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__}"
                                  "; nothing of it was published") from error
        publish()
