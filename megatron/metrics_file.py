"""The run's metrics file: what training logs, as JSON lines a program can read.

Training writes it beside the human log line and TensorBoard (``--metrics-file PATH``;
default ``<--tensorboard-dir>/metrics.jsonl``, the run's log folder; without either, no
file: the ``--save`` folder holds checkpoints only), from the logging rank only (the last rank: it holds the loss), one JSON object per
line, flushed per line, appended to on resume. Tools (the data-efficiency study and its
tuner) read this file, never the printed text, so rewording a log line changes nothing
they see. Every line holds ``schema`` (``SCHEMA``), ``event`` and ``time`` (Unix seconds):

* ``start``: a process began training: ``iteration`` / ``consumed_samples`` /
  ``consumed_tokens`` it starts from, ``resumed`` (counters from a checkpoint),
  ``train_iters`` (the run plan's steps) and ``config`` (model, layout, batch, stop
  conditions, precision, and the checkpoint's record of schedules, data and tokenizer).
* ``step``: a logged step (every ``--log-interval``): ``iteration``,
  ``consumed_samples``, ``consumed_tokens``, ``step_tokens``, ``learning_rate``,
  ``global_batch_size``, ``loss_scale``, ``grad_norm``, ``losses`` (each loss's mean over
  the interval's applied steps, as the log line prints), ``interval`` (steps since the
  previous ``step`` line of this process), ``iteration_time_s`` (mean wall seconds per
  step over them, evaluation excluded), ``tokens_per_second``, ``skipped_iterations`` /
  ``nan_iterations`` (in the interval) and ``plan`` (the step plan's scalars:
  ``curriculum/<metric>`` difficulties, ``seqlen/*`` lengths incl. the random-LTD kept
  length).
* ``eval``: an evaluation: ``split`` (``validation`` or ``test``), ``iteration``,
  ``consumed_samples``, ``consumed_tokens`` and ``values`` (``lm loss``, ``lm accuracy``
  ... as the loss function reports them, averaged over the split's batches).
* ``end``: the process stopped: its counters and ``exit``, one of ``finished`` (the
  stopping rule), ``stopped`` (``--exit-interval`` / ``--exit-duration-in-mins`` / a
  signal; ``reason`` says which), ``error`` (``error``: ``type``, ``message`` and what
  the error adds, e.g. the analyzer command a mismatched index needs) or
  ``interrupted``.

A non-finite number is written as null. Reading (``read_metrics``): lines apply in file
order; a ``start`` at iteration ``k`` discards what earlier lines recorded for iterations
after ``k`` (steps a crashed run took past its last checkpoint, which the resumed run
takes again), and a later line for the same iteration replaces an earlier one (last
write wins). A line that is not JSON (a write cut off by a crash) is skipped.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

SCHEMA = 1
FILE_NAME = "metrics.jsonl"


def default_path(metrics_file: str | None, tensorboard_dir: str | None) -> str | None:
    """``--metrics-file``, else ``metrics.jsonl`` in ``--tensorboard-dir``, else None (no
    file)."""
    if metrics_file:
        return metrics_file
    return os.path.join(tensorboard_dir, FILE_NAME) if tensorboard_dir else None


def _plain(value: Any) -> Any:
    """JSON's view of a value: non-finite floats as None, tensors and numpy scalars as
    numbers, mappings and sequences element-wise."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):   # torch / numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsWriter:
    """Appends events to the metrics file (``path`` None: writes nothing).

    Args:
        path: the file; its folder is created. An existing file is appended to (after a
            newline, if a killed run left a line unfinished).
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._file = None
        if path is None:
            return
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        unfinished = False
        if os.path.exists(path) and os.path.getsize(path) > 0:
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                unfinished = f.read(1) != b"\n"
        self._file = open(path, "a", encoding="utf-8")
        if unfinished:
            self._file.write("\n")

    def write(self, event: str, **fields: Any) -> None:
        """One line ``{"schema", "event", "time", **fields}``, flushed."""
        if self._file is None:
            return
        line = {"schema": SCHEMA, "event": event, "time": round(time.time(), 3),
                **_plain(fields)}
        self._file.write(json.dumps(line, allow_nan=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def exit_fields(err: BaseException) -> dict:
    """The ``end`` line's ``exit`` / ``reason`` / ``error`` of a run that raised ``err``
    (an error's ``details`` attribute, JSON-able facts for tools, goes into ``error``)."""
    if isinstance(err, KeyboardInterrupt):
        return {"exit": "interrupted", "reason": "KeyboardInterrupt"}
    error = {"type": type(err).__name__, "message": str(err), **getattr(err, "details", {})}
    return {"exit": "error", "reason": str(err).split("\n")[0], "error": error}


@dataclass
class RunMetrics:
    """A metrics file read back (``read_metrics``), duplicates resolved.

    Attributes:
        starts: every ``start`` line, in order (one per process that trained).
        steps: iteration -> its ``step`` line.
        evals: (split, iteration) -> its ``eval`` line.
        end: the last ``end`` line after the last ``start`` (None: the process did not
            finish writing, e.g. it was killed).
        skipped_lines: lines that were not JSON.
    """
    starts: list[dict] = field(default_factory=list)
    steps: dict[int, dict] = field(default_factory=dict)
    evals: dict[tuple[str, int], dict] = field(default_factory=dict)
    end: dict | None = None
    skipped_lines: int = 0

    def eval_series(self, split: str, key: str) -> dict[int, float]:
        """iteration -> ``values[key]`` of the ``split`` evaluations that report it."""
        return {it: e["values"][key] for (s, it), e in sorted(self.evals.items())
                if s == split and e["values"].get(key) is not None}

    def last(self) -> dict | None:
        """The counters furthest along: the line of any kind with the largest
        iteration (the ``end`` line where it is as far)."""
        lines = [*self.starts[-1:], *self.steps.values(), *self.evals.values(),
                 *([self.end] if self.end else [])]
        return max(lines, key=lambda line: line["iteration"], default=None)


class MetricsFollower:
    """The lines a running process appends to a metrics file, as they arrive (only
    complete lines; those the file held when following began are not returned)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = os.path.getsize(path) if os.path.exists(path) else 0

    def poll(self) -> list[dict]:
        """The complete JSON lines appended since the last call."""
        if not os.path.exists(self.path):
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        out = []
        for raw in data[:end].decode("utf-8").splitlines():
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if isinstance(line, dict):
                out.append(line)
        return out


def iter_lines(path: str) -> Iterator[dict | None]:
    """Each line of the file as a dict (None: not JSON)."""
    with open(path, encoding="utf-8") as f:
        for raw in f:
            raw = raw.strip()
            if not raw:
                continue
            try:
                yield json.loads(raw)
            except json.JSONDecodeError:
                yield None


def apply(metrics: RunMetrics, line: dict | None) -> None:
    """Fold one line into ``metrics`` (the reading rules of the module docstring)."""
    if line is None or not isinstance(line, dict):
        metrics.skipped_lines += 1
        return
    if line.get("schema") != SCHEMA:
        raise ValueError(f"metrics file line of schema {line.get('schema')!r}; this reader "
                         f"knows schema {SCHEMA}")
    event, it = line.get("event"), line.get("iteration")
    if event == "start":
        metrics.steps = {k: v for k, v in metrics.steps.items() if k <= it}
        metrics.evals = {k: v for k, v in metrics.evals.items() if k[1] <= it}
        metrics.end = None
        metrics.starts.append(line)
    elif event == "step":
        metrics.steps[it] = line
    elif event == "eval":
        metrics.evals[(line["split"], it)] = line
    elif event == "end":
        metrics.end = line


def read_metrics(path: str) -> RunMetrics:
    """The metrics file at ``path`` read back, duplicates resolved.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a line of another schema version.
    """
    metrics = RunMetrics()
    for line in iter_lines(path):
        apply(metrics, line)
    return metrics
