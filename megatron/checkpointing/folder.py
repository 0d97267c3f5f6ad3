"""What a checkpoint folder holds, independent of any rank: the tracker, which iterations
are complete, whether a run may save into it, and the temporary folders of killed saves
(names in ``files.py``; the run holding the folder in ``lock.py``)."""
from __future__ import annotations

import os
import shutil
import zipfile

import torch.distributed as dist

from megatron.checkpointing.dist_files import dist_problem, is_dist_folder
from megatron.checkpointing.files import CKPT_NAME, ITER_DIR, TMP_DIR, TRACKER, rank_folders
from megatron.errors import CheckpointError


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def read_tracker(root: str) -> int | None:
    """The iteration in ``root``'s tracker file, or None when there is none."""
    path = os.path.join(root, TRACKER)
    if not os.path.isfile(path):
        return None
    try:
        text = open(path).read().strip()
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: cannot read the tracker file: {err}") from None
    if not text.isdigit():
        raise CheckpointError(f"{path}: expected an iteration number, got {text!r} (write "
                              f"the iteration to resume from into it; complete iterations "
                              f"on disk: {describe_iterations(loadable_iterations(root))})")
    return int(text)


def _file_is_whole(path: str) -> bool:
    """A cheap completeness check: the zip archive's central directory reads (a file cut
    short loses it). Used to list candidates, not to trust a file."""
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def loadable_iterations(root: str) -> list[int]:
    """Published iterations under ``root`` whose every rank file (and, in the
    ``torch_dist`` format, every DCP file) looks complete, ascending."""
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        match = ITER_DIR.match(name)
        folder = os.path.join(root, name)
        if not match or not os.path.isdir(folder):
            continue
        files = [os.path.join(folder, d, CKPT_NAME) for d in rank_folders(folder)]
        if files and all(_file_is_whole(f) for f in files) and not (
                is_dist_folder(folder) and dist_problem(folder)):
            found.append(int(match.group(1)))
    return sorted(found)


def describe_iterations(iterations: list[int]) -> str:
    return ", ".join(str(i) for i in iterations) if iterations else "none"


def iteration_folders(root: str) -> list[int]:
    """Every published ``iter_XXXXXXX`` folder under ``root`` (complete or not), ascending."""
    if not os.path.isdir(root):
        return []
    return sorted(int(m.group(1)) for m in map(ITER_DIR.match, os.listdir(root))
                  if m and os.path.isdir(os.path.join(root, m.group(0))))


def describe_folder(root: str) -> str:
    """What a folder holds: its iteration folders and which of them are complete."""
    return (f"iteration folders {describe_iterations(iteration_folders(root))}, complete: "
            f"{describe_iterations(loadable_iterations(root))}")


def save_dir_conflict(save_dir: str | None, resumes_from_it: bool) -> str | None:
    """Why a run may not save into ``save_dir``, or None.

    A run owns its ``--save`` folder when the folder holds no checkpoint yet or the run
    resumed from it (``--load`` the same folder, not ``--finetune``); saving into a folder
    holding another run's checkpoints would replace iterations of the same number and
    mix the two runs under one tracker.
    """
    if not save_dir or resumes_from_it or not os.path.isdir(save_dir):
        return None
    tracker = os.path.isfile(os.path.join(save_dir, TRACKER))
    if not tracker and not iteration_folders(save_dir):
        return None
    return (f"--save {save_dir} already holds checkpoints this run did not load ("
            f"{describe_folder(save_dir)}; tracker {'present' if tracker else 'missing'}); its "
            f"saves would replace or mix with them. Resume them with --load {save_dir}, "
            "give another --save, or pass --overwrite-checkpoints to save over them")


def remove_stale_temp_dirs(save_dir: str | None) -> list[str]:
    """Delete ``iter_X.tmp`` folders (saves killed before their rename) in ``save_dir``.

    Collective: rank 0 deletes, every rank waits, so it must run before any save.

    Returns:
        The folders removed (on rank 0; empty elsewhere).
    """
    removed = []
    if save_dir and _rank() == 0 and os.path.isdir(save_dir):
        for name in sorted(os.listdir(save_dir)):
            if TMP_DIR.match(name):
                shutil.rmtree(os.path.join(save_dir, name), ignore_errors=True)
                removed.append(os.path.join(save_dir, name))
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    return removed
