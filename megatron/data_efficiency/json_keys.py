"""Strict reading of DeepSpeed-shaped JSON sections: an unknown key is an error naming its
full path, so a misspelt setting never silently falls back to a default."""
from __future__ import annotations

from typing import Any


def check_keys(d: Any, known: set[str], where: str) -> dict:
    """Return ``d`` if it is a JSON object whose keys are all in ``known``.

    Raises:
        ValueError: ``d`` is not an object, or names ``where.key`` for the first unknown key.
    """
    if not isinstance(d, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(d).__name__}")
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")
    return d
