"""``make mutate``: plant each curated bug (tests/mutations/catalog.py) in a scratch copy of
the tree, run the tests named for it, and report which were caught.

    .venv/bin/python tests/mutations/mutate.py [--jobs 2] [--only NAME ...] [--list]

The working tree is never edited: every job copies the tracked files (``git ls-files``,
modification times kept) into its own temporary folder with ``.venv`` linked, plants one
mutation there, runs ``pytest -x`` on the mutation's tests (``OMP_NUM_THREADS=1``), and
restores the file before the next one; the folders are removed at the end, also on
Ctrl-C. A mutation is *caught* when its tests fail, *survived* when they pass, and an
*error* when pytest could not run them (exit status other than 0 or 1, or a time-out).
Before the mutants, the union of their tests runs once on the unmutated copy: a failing
baseline makes the score meaningless, so the run stops (``--skip-baseline`` skips it).

Prints one line per mutation and the score (caught / mutations); exit status 0 when every
mutation was caught, 1 otherwise.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from tests.examples.fresh_clone import fresh_tree  # noqa: E402
from tests.mutations.catalog import MUTATIONS, Mutation  # noqa: E402


def check_catalog(root: str = ROOT, mutations=MUTATIONS) -> list[str]:
    """Problems with the catalog against the tree at ``root`` (empty: every original
    snippet occurs exactly once, names are unique, the tests exist)."""
    problems, names = [], set()
    for m in mutations:
        if m.name in names:
            problems.append(f"{m.name}: duplicate name")
        names.add(m.name)
        path = os.path.join(root, m.file)
        if not os.path.isfile(path):
            problems.append(f"{m.name}: no file {m.file}")
            continue
        text = open(path).read()
        for old, new in m.edits:
            if old == new:
                problems.append(f"{m.name}: an edit changes nothing")
            n = text.count(old)
            if n != 1:
                problems.append(f"{m.name}: {m.file} holds the snippet {n} times: {old[:60]!r}")
        for t in m.tests:
            if not os.path.exists(os.path.join(root, t.split("::")[0])):
                problems.append(f"{m.name}: no test {t}")
    return problems


def apply(tree: str, m: Mutation) -> str:
    """Plant ``m`` in ``tree``; returns the file's original text (for ``restore``)."""
    path = os.path.join(tree, m.file)
    original = open(path).read()
    text = original
    for old, new in m.edits:
        if text.count(old) != 1:
            raise ValueError(f"{m.name}: snippet not found exactly once in {m.file}")
        text = text.replace(old, new)
    with open(path, "w") as f:
        f.write(text)
    return original


def restore(tree: str, m: Mutation, original: str) -> None:
    with open(os.path.join(tree, m.file), "w") as f:
        f.write(original)


def run_tests(tree: str, tests, timeout: float) -> tuple[int | None, str]:
    """pytest -x on ``tests`` inside ``tree``: (exit status or None on time-out, tail)."""
    python = os.path.join(tree, ".venv", "bin", "python")
    if not os.path.exists(python):
        python = sys.executable
    cmd = [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    try:
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "time-out"
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return proc.returncode, lines[-1] if lines else ""


def outcome(code: int | None) -> str:
    return {0: "SURVIVED", 1: "caught"}.get(code, "error")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Plant the curated core mutations one at a time "
                                "in scratch copies and run their tests (make mutate).")
    p.add_argument("--jobs", type=int, default=1, help="mutations run side by side")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutations")
    p.add_argument("--list", action="store_true", help="list the mutations and exit")
    p.add_argument("--timeout", type=float, default=900, help="seconds per test run")
    p.add_argument("--skip-baseline", action="store_true",
                   help="do not run the tests once on the unmutated copy first")
    args = p.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    if args.list or not chosen:
        for m in MUTATIONS:
            print(f"{m.name:32s} {m.file}: {m.why}")
        return 0 if args.list else 2
    problems = check_catalog()
    if problems:
        print("error: the catalog does not match the tree:\n  " + "\n  ".join(problems),
              file=sys.stderr)
        return 2
    jobs = max(1, min(args.jobs, len(chosen)))
    base = tempfile.mkdtemp(prefix="mutate-")
    try:
        trees = [fresh_tree(ROOT, os.path.join(base, f"tree{j}")) for j in range(jobs)]
        if not args.skip_baseline:
            tests = sorted({t for m in chosen for t in m.tests})
            print(f"baseline: {len(tests)} test paths on the unmutated tree ...", flush=True)
            code, tail = run_tests(trees[0], tests, args.timeout * 4)
            if code != 0:
                print(f"error: the baseline fails ({tail}); fix it before mutating",
                      file=sys.stderr)
                return 2
        free = list(trees)
        results: dict[str, tuple[str, float, str]] = {}

        def one(m: Mutation) -> None:
            tree = free.pop()
            try:
                start = time.time()
                original = apply(tree, m)
                try:
                    code, tail = run_tests(tree, m.tests, args.timeout)
                finally:
                    restore(tree, m, original)
                results[m.name] = (outcome(code), time.time() - start, tail)
                print(f"{outcome(code):8s} {m.name:32s} {time.time() - start:6.0f} s  "
                      f"({m.why})", flush=True)
            finally:
                free.append(tree)

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(one, chosen))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    caught = sum(r[0] == "caught" for r in results.values())
    survived = [n for n, r in results.items() if r[0] == "SURVIVED"]
    errors = [n for n, r in results.items() if r[0] == "error"]
    print(f"\nmutation score: {caught} of {len(chosen)} caught "
          f"({100.0 * caught / len(chosen):.0f}%)"
          + (f"; survived: {', '.join(survived)}" if survived else "")
          + (f"; errors: {', '.join(errors)}" if errors else ""))
    return 0 if caught == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
