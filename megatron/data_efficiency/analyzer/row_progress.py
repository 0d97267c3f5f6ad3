"""Per-batch progress of the slow metrics (a reference model's forward pass per batch of
samples): rows done, rate and ETA, for the rows this rank scores.

On a terminal it is a tqdm bar on stderr; otherwise (a log file, a pipe) one line after
the first batch, then at most one every ``every`` seconds, and one at the end. It is
rank-local (no collective: ranks score at their own pace); the analyzer enables it on
rank 0 only, whose share is the same size as every other rank's to within a shard.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, TextIO


def clock(seconds: float) -> str:
    """``1h02m``, ``4m05s`` or ``12s``."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class RowProgress:
    """Counts rows (samples) as batches finish.

    Args:
        label: what is being done (``metric loss``).
        total: rows this rank will process.
        enabled: False prints nothing (``--quiet``, ranks other than 0).
        share: appended to the count, e.g. `` of rank 0's share``.
        every: seconds between lines when stderr is not a terminal.
    """

    def __init__(self, label: str, total: int, enabled: bool = True, share: str = "",
                 every: float = 10.0, stream: TextIO | None = None,
                 now: Callable[[], float] = time.perf_counter) -> None:
        self.label, self.total, self.share, self.every = label, int(total), share, every
        self.enabled = enabled and self.total > 0
        self.stream, self.now = stream or sys.stderr, now
        self.done, self.start, self.last = 0, now(), None
        self.bar = None
        if self.enabled and self.stream.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=self.total, desc=f"[analyzer] {label}", unit="sample",
                            file=self.stream, dynamic_ncols=True)

    def advance(self, rows: int) -> None:
        """``rows`` more rows are done."""
        if not self.enabled:
            return
        self.done += int(rows)
        if self.bar is not None:
            self.bar.update(int(rows))
            if self.done >= self.total:
                self.bar.close()
            return
        t = self.now()
        if self.last is None or t - self.last >= self.every or self.done >= self.total:
            self.last = t
            self.stream.write(self.line(t) + "\n")
            self.stream.flush()

    def line(self, t: float) -> str:
        elapsed = max(t - self.start, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta = "done" if self.done >= self.total else f"ETA {clock(left)}"
        return (f"[analyzer] {self.label}: {self.done:,}/{self.total:,} samples{self.share} "
                f"({100.0 * self.done / self.total:.1f}%), {rate:.1f} samples/s, "
                f"{clock(elapsed)} elapsed, {eta}")
