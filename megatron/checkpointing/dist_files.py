"""The files of a ``torch_dist`` iteration (DCP's ``.metadata`` and ``__R_N.distcp``
shards beside the rank folders) and the cheap completeness check every reader runs before
trusting them: the metadata reads, and every shard it names is there and long enough."""
from __future__ import annotations

import os

from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import Metadata

METADATA = ".metadata"
SHARD_SUFFIX = ".distcp"


def is_dist_folder(iter_dir: str) -> bool:
    """The folder holds a ``torch_dist`` checkpoint (or what is left of one)."""
    return os.path.isdir(iter_dir) and any(
        n == METADATA or n.endswith(SHARD_SUFFIX) for n in os.listdir(iter_dir))


def read_metadata(iter_dir: str) -> Metadata:
    """DCP's metadata; a missing or damaged file raises ``ValueError`` naming it."""
    path = os.path.join(iter_dir, METADATA)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: file not found")
    try:
        return FileSystemReader(iter_dir).read_metadata()
    except Exception as err:   # unpickling errors vary
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: cannot be read ({reason}); the file is damaged or was "
                         "cut short") from None


def dist_problem(iter_dir: str) -> str | None:
    """Why the folder's DCP files cannot be trusted (one line naming the file), or None."""
    try:
        metadata = read_metadata(iter_dir)
    except ValueError as err:
        return str(err)
    needed: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0),
                                         info.offset + info.length)
    for name, size in sorted(needed.items()):
        path = os.path.join(iter_dir, name)
        if not os.path.isfile(path):
            return f"{path}: file not found"
        have = os.path.getsize(path)
        if have < size:
            return (f"{path}: cannot be read (cut short: {have} of {size} bytes); the file "
                    "is damaged or was cut short")
    return None
