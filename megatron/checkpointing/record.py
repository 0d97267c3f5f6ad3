"""The run a checkpoint was saved by: its ``RunConfig``, stored as ``to_dict()`` under
``"run_config"``, and the migration of older records.

Version 0 is the record every checkpoint held before the typed config: the whole argparse
namespace as a dict under ``"args"`` (flags, derived values, ``model_type``).
:func:`migrate_args_record` turns it into a ``RunConfig`` through the same builder as a
command line (``megatron.config_from_flags``): a flag the record lacks (added since) takes
its default, so an old checkpoint rebuilds exactly the model it holds. Every reader of a
checkpoint's run goes through :func:`saved_run_config`.
"""
from __future__ import annotations

import argparse
import dataclasses

from megatron.config_dict import from_plain, to_plain
from megatron.config_from_flags import run_config_from_flags
from megatron.data_efficiency.config import DataEfficiencyConfig
from megatron.errors import CheckpointError
from megatron.run_config import VERSION, RunConfig

RECORD_KEY = "run_config"
LEGACY_KEY = "args"


def saved_run_config(state: dict, where: str) -> RunConfig | None:
    """The ``RunConfig`` a checkpoint file's ``state`` records (an older record migrated);
    None when it records none.

    Raises:
        CheckpointError: a record this code cannot read, naming ``where``.
    """
    try:
        if state.get(RECORD_KEY) is not None:
            return RunConfig.from_dict(upgrade(state[RECORD_KEY]))
        if state.get(LEGACY_KEY):
            return migrate_args_record(state[LEGACY_KEY])
    except (ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"{where}: cannot read the run it was saved by: {err}") from None
    return None


def upgrade(record: dict) -> dict:
    """A ``to_dict`` record of any version, as the current version (the steps of later
    schema changes go here, oldest first)."""
    version = record.get("version")
    if version == VERSION:
        return record
    if isinstance(version, int) and version > VERSION:
        raise ValueError(f"run config version {version} is newer than this code's "
                         f"({VERSION}): update the code to read this checkpoint")
    raise ValueError(f"unknown run config version {version!r}")


def _bert_flags() -> tuple[str, ...]:
    """The ``dest`` names of ``pretrain_bert.py``'s own flags (``RunConfig.extra``)."""
    from megatron.data.bert_flags import add_bert_args
    parser = argparse.ArgumentParser(add_help=False)
    add_bert_args(parser)
    return tuple(action.dest for action in parser._actions)


def migrate_args_record(saved: dict) -> RunConfig:
    """Version 0 (the validated namespace as a dict) -> ``RunConfig``."""
    flags = dict(saved)
    if saved.get("train_iters_is_stop") is False:   # the step count was an estimate then
        flags["train_iters"] = None
    if flags.get("orig_vocab_size") is None and flags.get("vocab_size") is not None:
        flags["orig_vocab_size"] = flags["vocab_size"]   # --vocab-size (no tokenizer)
    if dataclasses.is_dataclass(flags.get("data_efficiency")):
        # Pickled as an object then: unpickling restores only the fields it had, so a field
        # added since (dynamic_batching) is missing; rebuilt from its values, new fields at
        # their defaults.
        flags["data_efficiency"] = from_plain(DataEfficiencyConfig,
                                              _plain_of_pickled(flags["data_efficiency"]),
                                              "the checkpoint's data_efficiency")
    extra = _bert_flags() if saved.get("model_type") == "bert" else ()
    return run_config_from_flags(flags, extra)


def _plain_of_pickled(value):
    """``to_plain`` of an unpickled dataclass that may lack fields added after it was saved."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = {f.name for f in dataclasses.fields(value)}
        return {k: _plain_of_pickled(v) for k, v in vars(value).items() if k in names}
    return to_plain(value)
