"""Write the default corpus: the running interpreter's standard library source as jsonl.

Every machine with Python has this corpus, so demos and tests can tokenize real text without a
download. One JSON object per ``.py`` file, ``{"text": <source>, "path": <path relative to the
stdlib root>}``, in a seeded shuffled order: documents are sorted by a hash of
``(--seed, path)``, so the order is the same on every machine with the same file set (and a
file added or missing elsewhere does not move the others), while neighbouring documents
come from unrelated folders. A ``--split`` that takes the last documents for validation
(Megatron's) then validates on the same mix of code as it trains on, not on one folder
(alphabetical order put every validation document in ``encodings/``). ``--max-files`` /
``--max-bytes`` keep a prefix of that order, a random sample of the library. Files over
``--max-file-bytes`` (default 256 KiB) are left out: Megatron splits by whole documents,
so one huge document can be most of a small validation split (``pydoc_data/topics.py``,
a generated 740 KiB table of English help texts, made the demo's validation set mostly
prose); no other file of the library comes near the limit.

    python tools/prepare_default_corpus.py --output data/stdlib.jsonl [--max-files 200]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import sysconfig
import time

# Folders that are not library source: installed packages and byte-code caches.
_ALWAYS_SKIP = {"site-packages", "dist-packages", "__pycache__"}
_TEST_DIRS = {"test", "tests", "idle_test", "idlelib_test"}


def stdlib_root() -> str:
    return sysconfig.get_paths()["stdlib"]


def list_sources(root: str, skip_tests: bool = False) -> list[str]:
    """Relative paths of every ``.py`` file under ``root``, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames
                       if d not in _ALWAYS_SKIP and not (skip_tests and d in _TEST_DIRS)]
        for name in filenames:
            if name.endswith(".py"):
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(p.replace(os.sep, "/") for p in found)


def shuffled(paths: list[str], seed: int) -> list[str]:
    """``paths`` in the seeded order: by SHA-256 of ``"{seed}:{path}"`` (machine-independent)."""
    def key(path: str) -> tuple[str, str]:
        return hashlib.sha256(f"{seed}:{path}".encode("utf-8")).hexdigest(), path
    return sorted(paths, key=key)


DEFAULT_MAX_FILE_BYTES = 256 * 1024


def write_corpus(output: str, root: str | None = None, max_files: int | None = None,
                 max_bytes: int | None = None, skip_tests: bool = False,
                 seed: int = 1234, max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES) -> dict:
    """Write the jsonl corpus to ``output`` (via a temp file) and return a summary dict."""
    root = root or stdlib_root()
    if not os.path.isdir(root):
        raise FileNotFoundError(f"standard library folder not found: {root}")
    paths = shuffled(list_sources(root, skip_tests), seed)
    tmp = f"{output}.tmp{os.getpid()}"
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    docs = nbytes = unreadable = too_big = 0
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            for rel in paths:
                if (max_files is not None and docs >= max_files) or \
                        (max_bytes is not None and nbytes >= max_bytes):
                    break
                if max_file_bytes is not None and \
                        os.path.getsize(os.path.join(root, rel)) > max_file_bytes:
                    too_big += 1
                    continue
                try:
                    with open(os.path.join(root, rel), encoding="utf-8") as f:
                        text = f.read()
                except (UnicodeDecodeError, OSError):
                    unreadable += 1  # a few stdlib test files are deliberately not UTF-8
                    continue
                line = json.dumps({"text": text, "path": rel}, ensure_ascii=False)
                out.write(line + "\n")
                docs += 1
                nbytes += len(text.encode("utf-8"))
        os.replace(tmp, output)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return {"output": output, "root": root, "documents": docs, "text_bytes": nbytes,
            "skipped_unreadable": unreadable, "skipped_too_big": too_big,
            "candidates": len(paths)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="jsonl file to write")
    parser.add_argument("--max-files", type=int, default=None, help="stop after N documents")
    parser.add_argument("--max-bytes", type=int, default=None,
                        help="stop once N bytes of text are written (quick runs)")
    parser.add_argument("--skip-tests", action="store_true", help="leave out test/ folders")
    parser.add_argument("--root", default=None, help="source folder (default: this Python's stdlib)")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the document order")
    parser.add_argument("--max-file-bytes", type=int, default=DEFAULT_MAX_FILE_BYTES,
                        help="leave out files larger than this (0: no limit)")
    args = parser.parse_args(argv)
    if args.max_file_bytes < 0:
        parser.error("--max-file-bytes must be >= 0 (0: no limit)")
    for flag in ("max_files", "max_bytes"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be positive")
    start = time.time()
    s = write_corpus(args.output, args.root, args.max_files, args.max_bytes, args.skip_tests,
                     args.seed, args.max_file_bytes or None)
    print(f"wrote {s['documents']} documents ({s['text_bytes'] / 1e6:.2f} MB of text) from "
          f"{s['root']} to {s['output']} in {time.time() - start:.1f}s; "
          f"{s['skipped_unreadable']} unreadable files and {s['skipped_too_big']} over "
          f"--max-file-bytes skipped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
