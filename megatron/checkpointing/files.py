"""The on-disk names of a checkpoint, its tracker, and the atomic writes: the one
definition every reader and writer (training, the converters, the tasks) uses.

    {root}/latest_checkpointed_iteration.txt          the last published iteration
    {root}/iter_0000100/mp_rank_00/model_optim_rng.pt                 TP rank 00, PP == 1
    {root}/iter_0000100/mp_rank_01_002/model_optim_rng.pt             TP 01, PP rank 002
    {root}/iter_0000100/mp_rank_01_002_003/model_optim_rng.pt         ... EP rank 003 (MoE)
    {root}/iter_0000100/mp_rank_00/distrib_optim_dp000.pt             ZeRO-1 shard, per DP rank
    {root}/iter_0000100.tmp/                           a save in progress (or killed)

The pipeline suffix is written when the run has more than one stage, the expert-parallel
suffix (Megatron-LM's) when it has more than one expert-parallel rank. One file holds
``model`` (or ``model0 .. model{V-1}`` under the interleaved schedule).
"""
from __future__ import annotations

import os
import re
import shutil

import torch

from megatron.errors import CheckpointError

TRACKER = "latest_checkpointed_iteration.txt"
CKPT_NAME = "model_optim_rng.pt"
ITER_DIR = re.compile(r"^iter_(\d{7})$")
TMP_DIR = re.compile(r"^iter_\d{7}\.tmp$")
_RANK_DIR = re.compile(r"^mp_rank_(\d{2})(?:_(\d{3}))?(?:_(\d{3}))?$")


def checkpoint_dir(root: str, iteration: int) -> str:
    """The folder of one iteration."""
    return os.path.join(root, f"iter_{iteration:07d}")


def rank_folder(tp: int, pp: int | None = None, ep: int | None = None) -> str:
    """``mp_rank_TT[_PPP][_EEE]``: ``pp`` only when the layout has pipeline stages, ``ep``
    only when it has expert-parallel ranks."""
    name = f"mp_rank_{tp:02d}"
    if pp is not None:
        name += f"_{pp:03d}"
    if ep is not None:
        name += f"_{ep:03d}"
    return name


def parse_rank_folder(name: str) -> tuple[int, ...] | None:
    """The numbers of a rank folder's name (``(tp[, pp][, ep])``), None for other names.
    Which number is the pipeline and which the expert rank depends on the layout."""
    match = _RANK_DIR.match(name)
    return None if match is None else tuple(int(g) for g in match.groups() if g is not None)


def rank_folders(iter_dir: str) -> list[str]:
    """The rank folders of an iteration folder, sorted."""
    return sorted(n for n in os.listdir(iter_dir) if parse_rank_folder(n) is not None)


def optim_shard_file(model_file: str, dp_rank: int) -> str:
    """The distributed optimizer's shard of DP rank ``dp_rank`` beside a rank's file."""
    return os.path.join(os.path.dirname(model_file), f"distrib_optim_dp{dp_rank:03d}.pt")


def model_keys(num_chunks: int) -> list[str]:
    """``model`` or, under the interleaved schedule, ``model0 .. model{V-1}``."""
    return ["model"] if num_chunks == 1 else [f"model{i}" for i in range(num_chunks)]


def read_checkpoint_file(path: str) -> dict:
    """``torch.load`` one checkpoint file; a missing or damaged file raises
    :class:`CheckpointError` naming it and the reason."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:   # torch reports truncation as RuntimeError, pickle errors vary
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: cannot be read ({reason}); the file is damaged or "
                              "was cut short") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a checkpoint (holds a {type(state).__name__})")
    return state


def atomic_save(obj, path: str) -> None:
    """``torch.save`` to a temporary name, then rename: a reader never sees half a file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(obj, path + ".tmp")
    os.replace(path + ".tmp", path)


def publish(tmp_dir: str, final_dir: str, root: str, iteration: int) -> None:
    """Rename a finished ``iter_X.tmp`` folder into place, then point the tracker at it
    (replaced atomically), so a crash at any point leaves the tracker on a complete
    checkpoint."""
    old = final_dir + ".old"
    if os.path.exists(final_dir):       # re-saving the same iteration
        os.rename(final_dir, old)
    os.rename(tmp_dir, final_dir)
    shutil.rmtree(old, ignore_errors=True)
    tracker_tmp = os.path.join(root, TRACKER + ".tmp")
    with open(tracker_tmp, "w") as f:
        f.write(str(iteration))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tracker_tmp, os.path.join(root, TRACKER))
