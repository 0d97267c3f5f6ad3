"""What a run was trained with, saved in every checkpoint and compared on resume.

The record is plain JSON-able data built from the values it compares (no args object):
the data-efficiency schedule (curriculum and random-LTD, as configured), the sequence
length, the seed, the data (split, blend weights and each store's sizes; the paths are
kept for messages only, so moved data is the same data) and the tokenizer's identity
(``megatron.tokenizer.identity``). Resuming with any of it changed is refused with one
error naming every difference and the flag that accepts it:

* ``--override-data-efficiency-state``: another curriculum / random-LTD schedule (the
  curriculum sampler then starts its streams afresh at the resumed iteration);
* ``--override-training-data``: other data, split, ``--seq-length``, ``--seed`` or
  tokenizer.

``--finetune`` starts fresh counters and is not checked. A checkpoint written before the
record existed is resumed with a note that nothing was compared.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from megatron.errors import CheckpointError

VERSION = 1
OVERRIDE_FLAGS = {"data_efficiency": "--override-data-efficiency-state",
                  "data": "--override-training-data"}
_GROUP_OF = {"data_efficiency": "data_efficiency", "seq_length": "data", "seed": "data",
             "data": "data", "tokenizer": "data"}
_NOT_COMPARED = {("data", "paths")}   # where the stores are; their sizes are compared


def _plain(value: Any) -> Any:
    """JSON's view of a value (tuples as lists, dataclasses as dicts)."""
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    return json.loads(json.dumps(value, default=str))


def data_efficiency_record(config, run_seed: int) -> dict:
    """The schedule part of a ``DataEfficiencyConfig``: each enabled feature's settings
    (a disabled one is only ``{"enabled": false}``), and its seed when a feature is on and
    the seed is not the run's ``--seed`` (which the record holds itself). How the config
    was given (flags or JSON) and the loader settings are not part of it; token-budget
    batching's settings are, when it is on (not where its seqlen metric lies: the packing's
    own fingerprint, in the sampler state, covers what it holds)."""
    curriculum = (_plain(config.curriculum) if config.curriculum.enabled
                  else {"enabled": False})
    ltd = _plain(config.random_ltd) if config.random_ltd.enabled else {"enabled": False}
    record = {"curriculum": curriculum, "random_ltd": ltd}
    batching = config.dynamic_batching
    if batching.enabled:   # absent when off: records written before it existed stay equal
        record["dynamic_batching"] = {k: v for k, v in _plain(batching).items()
                                      if k not in ("metrics_path", "verbose")}
    if (config.curriculum.enabled or config.random_ltd.enabled
            or batching.enabled) and config.seed != run_seed:
        record["seed"] = int(config.seed)
    return record


def run_record(*, data_efficiency: dict, seq_length: int, seed: int, data: dict,
               tokenizer: dict) -> dict:
    """The record saved with a checkpoint.

    Args:
        data_efficiency: ``data_efficiency_record(config)``.
        seq_length: ``--seq-length``.
        seed: ``--seed``.
        data: ``{"split": str, "splits": {"train"|"valid"|"test"|"all": [[weight,
            store sizes], ...]}, "paths": {...}}`` (``preflight.data_record``).
        tokenizer: the tokenizer identity.
    """
    return _plain({"version": VERSION, "data_efficiency": data_efficiency,
                   "seq_length": int(seq_length), "seed": int(seed), "data": data,
                   "tokenizer": tokenizer})


def _diff(old: Any, new: Any, path: tuple[str, ...], out: list[tuple[tuple, Any, Any]]) -> None:
    if path[:2] in _NOT_COMPARED:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        if "enabled" in old and "enabled" in new and old["enabled"] != new["enabled"]:
            out.append((path + ("enabled",), old["enabled"], new["enabled"]))
            return   # a feature switched on or off: its settings need not be listed
        for key in sorted(set(old) | set(new), key=str):
            _diff(old.get(key), new.get(key), path + (str(key),), out)
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            _diff(a, b, path + (str(i),), out)
    elif old != new:
        out.append((path, old, new))


def record_differences(saved: dict, current: dict) -> dict[str, list[str]]:
    """``{override flag: ["key.path: saved -> current", ...]}`` for what differs."""
    found: list[tuple[tuple, Any, Any]] = []
    _diff({k: v for k, v in saved.items() if k != "version"},
          {k: v for k, v in current.items() if k != "version"}, (), found)
    out: dict[str, list[str]] = {}
    for path, old, new in found:
        flag = OVERRIDE_FLAGS[_GROUP_OF.get(path[0], "data")]
        out.setdefault(flag, []).append(f"{'.'.join(path)}: {_short(old)} -> {_short(new)}")
    return out


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_resume(saved: dict | None, current: dict, overrides: set[str],
                 where: str) -> tuple[list[str], bool]:
    """Compare a checkpoint's record with this run's.

    Args:
        saved: the checkpoint's record (None: written before records existed).
        current: this run's record.
        overrides: the override flags given (``OVERRIDE_FLAGS`` values).
        where: the checkpoint, for the message.

    Returns:
        ``(log lines, changed)``: what is noted or accepted, and whether anything the
        flags accepted changed.

    Raises:
        CheckpointError: naming every difference not covered by ``overrides``, and its
            flag.
    """
    if saved is None:
        return ([f"{where} has no record of its data, seed, sequence length, tokenizer or "
                 "data-efficiency schedule (an older checkpoint): nothing compared"], False)
    differences = record_differences(saved, current)
    refused = {f: d for f, d in differences.items() if f not in overrides}
    if refused:
        raise CheckpointError(f"{where} was trained with other settings than this run: "
                         + "; ".join(f"{'; '.join(d)} (accept with {f})"
                                     for f, d in refused.items())
                         + "; resume with the checkpoint's settings or pass the flags named")
    lines = [f"{flag}: resuming with changes: {'; '.join(d)}" for flag, d in differences.items()]
    old_paths, new_paths = saved.get("data", {}).get("paths"), current["data"].get("paths")
    if old_paths != new_paths and "--override-training-data" not in differences:
        lines.append(f"the data moved (same stores): {_short(old_paths, 200)} -> "
                     f"{_short(new_paths, 200)}")
    return lines, bool(differences)
