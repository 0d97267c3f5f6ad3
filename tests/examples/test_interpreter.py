"""One interpreter convention for every example: each script sources examples/_python.sh,
which finds the project's .venv (running `make setup` when it is missing) unless PYTHON is
set, and derives torchrun and mpiexec from that interpreter; no script runs a bare
``python`` / ``torchrun`` / ``mpiexec`` from PATH. (The recipes' own tests run them with no
python on PATH: tests/tools/test_flagship_recipe.py, tests/examples/test_mds_recipes.py,
tests/hf/test_finetune_example.py, the study's held-out script.)"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.examples.fresh_clone import no_python_env
from tests.tools.tool_loader import ROOT

ROOT = os.path.abspath(ROOT)
# the scripts a user runs (a shebang); sourced helpers (_python.sh, mds/ds_config.sh) have none
SCRIPTS = sorted(os.path.relpath(p, ROOT)
                 for p in glob.glob(os.path.join(ROOT, "examples", "**", "*.sh"), recursive=True)
                 if open(p).readline().startswith("#!"))
# a command word that is an interpreter or launcher from PATH
BARE = re.compile(r"(?:^|[\s;|&(=\"'])(python3?|torchrun|mpiexec|pip)(?=[\s;|&)\"'])|\$\{?PY\b")


def _code_lines(path: str) -> list[str]:
    with open(os.path.join(ROOT, path)) as f:
        return [line for line in f if not line.lstrip().startswith("#")]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_example_finds_the_interpreter_itself(script):
    code = "".join(_code_lines(script))
    runs_python = re.search(r"\$PYTHON|\$\{TORCHRUN|\$MPIEXEC|\blaunch\b", code)
    if runs_python:
        assert re.search(r"^\s*source .*examples/_python\.sh", code, re.M), \
            f"{script} runs python without sourcing examples/_python.sh"
    else:   # a wrapper: it runs other examples, which source it
        assert re.search(r"bash examples/\S+\.sh", code), script
    bare = [line.strip() for line in _code_lines(script) if BARE.search(line)]
    assert not bare, f"{script} calls an interpreter from PATH: {bare}"


def _source(env: dict, cwd: str = ROOT) -> list[str]:
    out = subprocess.run(["bash", "-c", 'source examples/_python.sh && echo "$PYTHON" && '
                          '"${TORCHRUN[@]}" --help | head -1 && echo "$MPIEXEC"'],
                         cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_python_sh_finds_venv_without_python_on_path_and_honours_PYTHON(tmp_path):
    env = no_python_env(str(tmp_path))
    python, torchrun, mpiexec = _source(env)
    assert python == os.path.join(ROOT, ".venv", "bin", "python")
    assert torchrun.startswith("usage:") and "torch" not in env["PATH"]
    assert mpiexec in (os.path.join(ROOT, ".venv", "bin", "mpiexec"), "mpiexec")
    assert _source({**env, "PYTHON": sys.executable})[0] == sys.executable
    bad = subprocess.run(["bash", "-c", "source examples/_python.sh"], cwd=ROOT,
                         env={**env, "PYTHON": "/no/such/python"}, capture_output=True, text=True)
    assert bad.returncode == 2 and "PYTHON=/no/such/python" in bad.stderr


def test_python_sh_runs_make_setup_when_venv_is_missing(tmp_path):
    """A fresh clone: no .venv yet. The sourced file makes it with `make setup` (here a
    stand-in Makefile that links the real interpreter) and uses it."""
    tree = tmp_path / "clone"
    (tree / "examples").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "examples", "_python.sh"), tree / "examples")
    (tree / "Makefile").write_text(
        f"setup:\n\tmkdir -p .venv/bin && ln -s {sys.executable} .venv/bin/python && "
        f"touch made-by-setup\n")
    python = _source(no_python_env(str(tmp_path)), cwd=str(tree))[0]
    assert python == str(tree / ".venv" / "bin" / "python")
    assert (tree / "made-by-setup").exists()
