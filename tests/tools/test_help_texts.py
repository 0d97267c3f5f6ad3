"""Every tool's --help is whole and names only flags it takes: the description is a
complete sentence, and each ``--flag`` the help text mentions is one of the parser's own
(or, for tools/analyze_data.py, a training flag it passes to pretrain's parser)."""
from __future__ import annotations

import argparse
import contextlib
import glob
import io
import os
import re
import runpy
import sys

import pytest

from megatron.arguments import parse_args as training_parse_args
from tests.tools.tool_loader import ROOT

SCRIPTS = sorted(os.path.relpath(p, ROOT) for pattern in
                 ("tools/*.py", "benchmarks/*.py", "tasks/eval_harness.py", "tasks/main.py",
                  "examples/*.py")
                 for p in glob.glob(os.path.join(ROOT, pattern))
                 if 'if __name__ == "__main__"' in open(p).read())   # scripts, not helpers
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*[a-z0-9]")


def _help_of(script: str) -> tuple[str, argparse.ArgumentParser]:
    """(the --help text, the parser that printed it), run in this process."""
    shown = []
    original = argparse.ArgumentParser.print_help

    def print_help(self, file=None):
        shown.append(self)
        original(self, file)

    out = io.StringIO()
    argv = sys.argv
    argparse.ArgumentParser.print_help = print_help
    sys.argv = [script, "--help"]
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            runpy.run_path(os.path.join(ROOT, script), run_name="__main__")
    finally:
        argparse.ArgumentParser.print_help = original
        sys.argv = argv
    assert shown, f"{script} --help printed no argparse help"
    return out.getvalue(), shown[-1]


def _training_flags() -> set[str]:
    parser = []
    training_parse_args(lambda p: parser.append(p) or p, args=["--num-layers", "1"])
    return {s for a in parser[0]._actions for s in a.option_strings}


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_is_whole_and_names_only_its_flags(script):
    text, parser = _help_of(script)
    description = (parser.description or "").strip()
    assert description.endswith((".", ")", ":")), f"{script}: description cut off: {description!r}"
    own = {s for a in parser._actions for s in a.option_strings}
    known = own | (_training_flags() if script == "tools/analyze_data.py" else set())
    unwrapped = re.sub(r"-\n\s+", "-", text)   # argparse wraps lines at a flag's hyphens
    unknown = sorted(set(FLAG.findall(unwrapped)) - known)
    assert not unknown, f"{script} --help mentions flags it does not take: {unknown}"
    headings = {line.strip().rstrip(":").lower() for line in text.splitlines()
                if line.strip().endswith(":") or line.strip().endswith("):")}
    for section in re.findall(r"'([^']+)' below", text):
        assert any(h.startswith(section.lower()) for h in headings), \
            f"{script} --help points to a section '{section}' it does not print"
