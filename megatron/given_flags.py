"""Which flags the user actually gave, as opposed to the parser's defaults.

The one home of the rule "explicit beats default": a value from a config file
(``--deepspeed_config``, ``--data-efficiency-config``) may replace a flag's *default*, but
contradicting a flag the user *gave* is an error. ``parse_args`` records the given flags once
(``args.given_flags``: their argparse ``dest`` names); the config readers ask ``was_given``
and, when a config value replaces a default, say so with ``note_from_config`` (printed by
``initialize_megatron``).
"""
from __future__ import annotations

import argparse


def given_dests(parser: argparse.ArgumentParser, argv: list[str] | None) -> tuple[str, ...]:
    """The ``dest`` names of the flags present in ``argv`` (sorted): ``argv`` parsed a
    second time with every default suppressed, so only given flags land in the result."""
    actions = list(parser._actions)
    defaults = [a.default for a in actions]
    try:
        for a in actions:
            a.default = argparse.SUPPRESS
        parsed, _ = parser.parse_known_args(argv)
    finally:
        for a, default in zip(actions, defaults):
            a.default = default
    return tuple(sorted(vars(parsed)))


def was_given(args: argparse.Namespace, dest: str) -> bool:
    """True when the flag of ``dest`` was on the command line. Args built without
    ``parse_args`` (no record) count every value that is not None as given."""
    given = getattr(args, "given_flags", None)
    if given is None:
        return getattr(args, dest, None) is not None
    return dest in given


def note_from_config(args: argparse.Namespace, dest: str, value, source: str) -> None:
    """Set a flag that was not given to a config file's value, and record the line that
    says so (``args.flags_from_config``)."""
    setattr(args, dest, value)
    flag = "--" + dest.replace("_", "-")
    notes = list(getattr(args, "flags_from_config", ()))
    notes.append(f"{flag} {value} from {source} ({flag} not given)")
    args.flags_from_config = notes
