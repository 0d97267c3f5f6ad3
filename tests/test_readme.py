"""The README is executable.

Every shell block marked ``<!-- runnable NAME[: VAR=value ...] -->`` on the line before its
fence runs, in README order, from a fresh copy of the tracked files (the project's .venv
linked in) in a shell with no ``python`` on PATH (tests/examples/fresh_clone.py), as a
new user following the README would run it. ``VAR=value`` pairs shrink a block through
environment variables it honours. One test per block; a block may use what an earlier
one built (the README's own order). The flagship recipe's dry run is also checked to
train to its end with the analyzer sized by training's own function. And every figure of
"Measured figures" names the command that measured it and the date (or says that it is
to be re-measured).
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

import pytest

from tests.examples.fresh_clone import fresh_tree, no_python_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = re.compile(r"^<!-- runnable (?P<name>[\w-]+)(?::(?P<env>[^>]*))? -->\n```bash\n"
                    r"(?P<code>.*?)\n```", re.M | re.S)


@dataclass(frozen=True)
class Block:
    name: str
    env: dict
    code: str


def runnable_blocks(text: str) -> list[Block]:
    return [Block(m["name"], dict(kv.split("=", 1) for kv in (m["env"] or "").split()),
                  m["code"]) for m in MARKER.finditer(text)]


README = open(os.path.join(ROOT, "README.md")).read()
BLOCKS = runnable_blocks(README)


class _Runs:
    """Runs the blocks in README order, each once, in one fresh tree."""

    def __init__(self, folder: str):
        self.tree = fresh_tree(ROOT, os.path.join(folder, "clone"))
        self.env = no_python_env(folder, OMP_NUM_THREADS="1")
        self.done: dict[str, subprocess.CompletedProcess] = {}

    def upto(self, name: str) -> subprocess.CompletedProcess:
        for block in BLOCKS:
            if block.name not in self.done:
                script = os.path.join(self.tree, f".readme_{block.name}.sh")
                with open(script, "w") as f:
                    f.write(block.code + "\n")
                self.done[block.name] = subprocess.run(
                    ["bash", "-eo", "pipefail", script], cwd=self.tree,
                    env={**self.env, **block.env}, capture_output=True, text=True,
                    timeout=900)
            if block.name == name:
                return self.done[name]
        raise KeyError(name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return _Runs(str(tmp_path_factory.mktemp("readme")))


def test_the_readme_marks_its_walk_throughs_runnable():
    names = [b.name for b in BLOCKS]
    assert len(names) == len(set(names)), names
    for expected in ("tour", "flagship", "hf-export", "prune"):
        assert expected in names


@pytest.mark.slow
@pytest.mark.parametrize("name", [b.name for b in BLOCKS])
def test_runnable_block_runs_as_written(runs, name):
    proc = runs.upto(name)
    assert proc.returncode == 0, (f"README block '{name}' failed (exit {proc.returncode}):\n"
                                  + (proc.stdout + proc.stderr)[-4000:])


@pytest.mark.slow
def test_flagship_dry_run_trains_to_the_end(runs):
    """DRY_RUN=1 of the 1.3B recipe: the analyzer sizes the index with training's own
    function from the same flags, and training runs every one of those steps at the
    recipe's LR for half the budget (4e-4)."""
    proc = runs.upto("flagship")
    log = proc.stdout + proc.stderr
    steps = re.search(r"\[analyzer\] the training run takes (\d+) steps", log).group(1)
    assert f"validation loss at iteration {steps} " in log
    out = os.path.join(runs.tree, "build", "dry_run_1.3B")
    assert os.path.isfile(os.path.join(out, "analysis", "voc", "meta.json"))
    assert re.search(r"lm loss: \d", log) and "learning rate: 3.9" in log


def _section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else len(text)]


def test_every_measured_figure_names_its_command_and_date():
    figures = [p for p in _section(README, "Measured figures").split("\n\n")
               if p.startswith("**")]
    assert len(figures) >= 6
    for paragraph in figures:
        head = paragraph.split("**")[1]
        assert "`" in paragraph, f"figure '{head}' names no command"
        assert re.search(r"20\d\d-\d\d-\d\d|to be re-measured|no figures", paragraph), \
            f"figure '{head}' says neither when it was measured nor that it is to be re-measured"
