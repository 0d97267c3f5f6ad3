"""One run per ``--save`` folder: an OS file lock on ``SAVE/run.lock``.

The rank that publishes checkpoints (global rank 0) takes an exclusive ``flock`` on
``SAVE/run.lock`` before it touches the folder and holds it for the whole run. The file
says who holds it (host, pid, start time, command), so a second run on the same folder is
refused with a message naming the holder. The kernel releases a ``flock`` when its
process ends in any way (exception, ``kill -9``, node reboot), so a lock file whose lock
is free is stale: the next run takes it over and says whose it was. On a file system
without ``flock`` support the run goes on with a warning (nothing is locked).

Multi-node: the lock is taken through the file system, so it holds across nodes where
``flock`` works on the shared file system (NFSv4 and Lustre with ``-o flock`` do; Lustre
with ``-o localflock`` locks per node only).
"""
from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
import sys

LOCK_NAME = "run.lock"


class SaveDirLockedError(RuntimeError):
    """Another live process holds the folder's lock (the message names it)."""


def _holder_text() -> str:
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                       "started": datetime.datetime.now().astimezone().isoformat(
                           timespec="seconds"),
                       "command": " ".join([sys.executable] + sys.argv)}) + "\n"


def describe_holder(text: str) -> str:
    """``pid P on host H since T: COMMAND`` from a lock file's content (or the raw text)."""
    try:
        h = json.loads(text)
        return f"pid {h['pid']} on host {h['host']} since {h['started']}: {h['command']}"
    except (ValueError, KeyError, TypeError):
        return repr(text.strip()) if text.strip() else "an unknown process (empty lock file)"


class SaveDirLock:
    """The exclusive lock of one save folder, held from ``acquire`` to ``release`` (or
    the end of the process)."""

    def __init__(self, save_dir: str) -> None:
        self.path = os.path.join(save_dir, LOCK_NAME)
        self._fd: int | None = None
        self.took_over: str | None = None   # the stale holder this run replaced, if any

    def acquire(self) -> "SaveDirLock":
        """Take the lock; ``SaveDirLockedError`` naming the holder if a live process has
        it. Returns self; ``took_over`` describes a stale holder that was replaced."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = describe_holder(os.pread(fd, 1 << 16, 0).decode("utf-8", "replace"))
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise SaveDirLockedError(
                    f"{self.path}: another run is using this --save folder ({holder}); "
                    "wait for it to end, or give this run another --save") from None
            print(f" > WARNING: {self.path}: cannot lock ({err.strerror}); a second run on "
                  "this folder would not be detected", file=sys.stderr, flush=True)
            return self
        old = os.pread(fd, 1 << 16, 0).decode("utf-8", "replace")
        if old.strip():
            self.took_over = describe_holder(old)
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder_text().encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Empty the file and unlock (an empty lock file is a cleanly ended run's)."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
