"""A shell environment as on a fresh machine with no activated environment: the
interpreter's folder is off PATH, and ``python``, ``python3``, ``pip``, ``torchrun`` and
``mpiexec`` found on PATH fail loudly, so a script that relies on them (instead of finding
the project's .venv, examples/_python.sh) fails the test that runs it."""
from __future__ import annotations

import os
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
