"""A fresh clone on a fresh shell: a copy of the tracked files (``fresh_tree``, with the
project's .venv linked in), and an environment with no activated environment
(``no_python_env``): the interpreter's folder is off PATH, and ``python``, ``python3``,
``pip``, ``torchrun`` and ``mpiexec`` found on PATH fail loudly, so a script that relies
on them (instead of finding the project's .venv, examples/_python.sh) fails the test that
runs it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

SHADOWED = ("python", "python3", "pip", "pip3", "torchrun", "mpiexec")


def no_python_env(folder: str, **extra: str) -> dict[str, str]:
    """``os.environ`` without ``PYTHON`` / ``VIRTUAL_ENV``, with PATH = a folder of failing
    stand-ins for the interpreters, then the old PATH without the interpreter's folder."""
    shadow = os.path.join(folder, "no_python_bin")
    os.makedirs(shadow, exist_ok=True)
    for name in SHADOWED:
        path = os.path.join(shadow, name)
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\necho \"{name} was called from PATH (no activated environment "
                    f"here): $0 $*\" >&2\nexit 127\n")
        os.chmod(path, 0o755)
    venv_bin = os.path.dirname(os.path.abspath(sys.executable))
    kept = [p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
            if p and os.path.abspath(p) != venv_bin]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VIRTUAL_ENV", "PY")}
    env["PATH"] = os.pathsep.join([shadow] + kept)
    env.update(extra)
    return env


def fresh_tree(root: str, into: str) -> str:
    """The tracked files of ``root`` (``git ls-files``, modification times kept, so make's
    stamps in .venv stay newer than requirements*.txt) copied under ``into``, with
    ``.venv`` linked to the project's environment."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=root, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = os.path.join(root, rel)
        if os.path.isfile(src):
            dst = os.path.join(into, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(src, dst)
    venv = os.path.realpath(os.path.join(root, ".venv"))
    if os.path.isdir(venv):
        os.symlink(venv, os.path.join(into, ".venv"))
    return into
