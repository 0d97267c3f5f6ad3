"""What the study prints while its runs go: one condensed line per logged step and
validation of each training run, read from the run's metrics file
(``megatron.metrics_file``; never its printed log), and one line as each run ends."""
from __future__ import annotations

import threading
from typing import Callable

from megatron.metrics_file import MetricsFollower


def print_flush(text: str) -> None:
    print(text, flush=True)


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def step_progress(line: dict, total: int | None) -> str | None:
    """The progress text of one metrics-file line: a logged step (``step N/M loss L  ETA
    T``, ``total`` the run's planned steps) or a validation; None for other lines."""
    it = line.get("iteration")
    if line.get("event") == "step":
        left = max(0, (total or it) - it) * (line.get("iteration_time_s") or 0.0)
        loss = line.get("losses", {}).get("lm loss")
        loss = "" if loss is None else f" loss {loss:.4f}"
        return f"step {it}/{total or '?'}{loss}  ETA {_clock(left)}"
    values = line.get("values", {})
    if line.get("event") == "eval" and line.get("split") == "validation" \
            and values.get("lm loss") is not None:
        return f"validation (whole split) at step {it}: loss {values['lm loss']:.4f}"
    return None


class TrainingProgress:
    """The progress texts of a training process's metrics file as it grows (only the
    lines appended after this object was made: the process being watched)."""

    def __init__(self, metrics_file: str) -> None:
        self.follower, self.total = MetricsFollower(metrics_file), None

    def poll(self) -> list[str]:
        texts = []
        for line in self.follower.poll():
            if line.get("event") == "start":
                self.total = line.get("train_iters")
            text = step_progress(line, self.total)
            if text is not None:
                texts.append(text)
        return texts


class Progress:
    """Thread-safe condensed progress lines: one per logged step and validation of a run
    (``TrainingProgress``), and ``[run N/M]`` as each run ends (``unit`` names the runs;
    ``at_most``: M is an upper bound, as for the tuner's binary search)."""

    def __init__(self, total_runs: int, printer: Callable[[str], None], unit: str = "run",
                 at_most: bool = False) -> None:
        self.total, self.done, self.lock, self.printer = total_runs, 0, threading.Lock(), printer
        self.unit, self.at_most = unit, at_most

    def say(self, text: str) -> None:
        with self.lock:
            self.printer(text)

    def finished(self, name: str, record: dict, skipped: bool) -> None:
        with self.lock:
            self.done += 1
        how = "already done, skipped" if skipped else f"{record['train_seconds']:.1f} s"
        of = f" of at most {self.total}" if self.at_most else f"/{self.total}"
        self.say(f"[{self.unit} {self.done}{of}] {name}: val loss {record['val_loss']:.4f}, "
                 f"{record['consumed_tokens']:,} tokens, {how}")
