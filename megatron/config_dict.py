"""Typed config dataclasses <-> plain JSON-able dicts, in one place.

``to_plain`` turns nested dataclasses into dicts of plain values (tuples and sets as lists,
a ``torch.dtype`` as its name), so a record pickles without naming any class of this
codebase and reads back after the code moved. ``from_plain(cls, d)`` rebuilds ``cls``
from such a dict by its type hints (nested dataclasses, ``X | None``, unions of a string
and a dataclass, tuples, frozensets, lists, dtypes); the dataclass's own
``__post_init__`` checks run again. A key the class does not have is an error (a record
of a newer schema), a key it lacks takes the field's default.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

import torch


def to_plain(value: Any) -> Any:
    """Plain Python data (dicts, lists, str, numbers, bool, None) of ``value``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (frozenset, set)):
        return sorted(to_plain(v) for v in value)
    if isinstance(value, (tuple, list)):
        return [to_plain(v) for v in value]
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    return value


def _union_members(tp: Any) -> tuple | None:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return tuple(a for a in typing.get_args(tp) if a is not type(None))
    return None


def _typed(tp: Any, value: Any, where: str) -> Any:
    if value is None or tp is Any:
        return value
    members = _union_members(tp)
    if members is not None:
        if isinstance(value, Mapping):
            classes = [m for m in members if dataclasses.is_dataclass(m)]
            if len(classes) == 1:
                return from_plain(classes[0], value, where)
        plain = [m for m in members if not dataclasses.is_dataclass(m)]
        return _typed(plain[0], value, where) if len(plain) == 1 else value
    if dataclasses.is_dataclass(tp):
        return from_plain(tp, value, where)
    origin, params = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple:
        item = params[0] if params else Any
        return tuple(_typed(item, v, where) for v in value)
    if origin in (frozenset, set):
        return frozenset(_typed(params[0] if params else Any, v, where) for v in value)
    if origin is list:
        return [_typed(params[0] if params else Any, v, where) for v in value]
    if origin in (dict, Mapping, typing.Mapping) or tp in (dict, Mapping):
        item = params[1] if len(params) == 2 else Any
        return {k: _typed(item, v, where) for k, v in value.items()}
    if tp is torch.dtype:
        return getattr(torch, value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def from_plain(cls: type, data: Mapping, where: str = "config"):
    """``cls`` rebuilt from ``to_plain``'s dict.

    Raises:
        ValueError: ``data`` names a field ``cls`` does not have (``where`` in the message).
    """
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: {cls.__name__} has no field(s) {unknown}")
    hints = typing.get_type_hints(cls)
    return cls(**{name: _typed(hints[name], value, f"{where}.{name}")
                  for name, value in data.items()})
