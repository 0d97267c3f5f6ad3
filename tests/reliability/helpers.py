"""Helpers of the reliability tests: the shared corpus (built once, ``conftest.corpus``),
tiny GPT flags at the default ``--num-workers 2``, and subprocess runs that fail a test
instead of hanging it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import torch

from megatron.tokenizer.gpt2_tokenization import bytes_to_unicode

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
FAULTY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "faulty_pretrain.py")
WORDS = ("the cat sat on a mat while some dogs ran after every red ball that rolled down "
         "into one old garden where three birds sang").split()


@dataclass(frozen=True)
class Corpus:
    root: str
    jsonl: str
    store: str                       # tokenizer A's store (with its record)
    tokenizer_a: tuple[str, ...]     # pretrain / preprocess flags of each tokenizer
    tokenizer_b: tuple[str, ...]


def tool(name: str):
    """A tools/ script as a module, the one already loaded if another test loaded it
    (loading it again would replace it in sys.modules, and the other test's worker pool
    could no longer pickle its classes)."""
    from tests.tools.tool_loader import load_tool
    return sys.modules.get(name) or load_tool(name)


def gpt2_files(folder: str, merges: list[tuple[str, str]]) -> tuple[str, ...]:
    symbols = list(bytes_to_unicode().values()) + [a + b for a, b in merges] + ["<|endoftext|>"]
    vocab, merge = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
    os.makedirs(folder, exist_ok=True)
    with open(vocab, "w") as f:
        json.dump({s: i for i, s in enumerate(dict.fromkeys(symbols))}, f)
    with open(merge, "w") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return ("--tokenizer-type", "GPT2BPETokenizer", "--vocab-file", vocab, "--merge-file", merge)


def gpt_flags(corpus: Corpus, *extra: str, iters: int = 6) -> list[str]:
    """A tiny GPT on the corpus with tokenizer A, the default worker count (2)."""
    return ["--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "2",
            "--seq-length", "16", "--max-position-embeddings", "16", "--micro-batch-size", "2",
            "--global-batch-size", "4", "--train-iters", str(iters), "--lr", "3e-3",
            "--lr-warmup-iters", "2", "--log-interval", "1", "--eval-interval", "3",
            "--eval-iters", "1", "--seed", "7", "--use-cpu-initialization",
            "--data-path", corpus.store, "--split", "90,10,0", *corpus.tokenizer_a, *extra]


def launch(argv: list[str], fault: str = "none") -> subprocess.Popen:
    """``python ARGV`` in its own session (so its whole process group can be checked and
    killed), with ``MEGATRON_TEST_FAULT`` set for ``faulty_pretrain.py``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MEGATRON_TEST_FAULT": fault}
    env.pop("MEGATRON_TRACEBACK", None)
    return subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            cwd=ROOT, env=env)


def group_is_gone(proc: subprocess.Popen, wait_s: float = 1.0) -> bool:
    """Whether no process of ``proc``'s group (its DataLoader workers included) is left,
    allowing ``wait_s`` for an already dead process to be reaped."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def finish(proc: subprocess.Popen, timeout: float = 120.0) -> tuple[int, str, str]:
    """Wait for ``proc`` (generous: a hang, not slowness, fails) and kill its whole group
    if it does not end; returns (exit code, stdout, stderr)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        raise AssertionError(f"the process did not exit within {timeout:.0f} s (hang); "
                             f"stderr:\n{err[-3000:]}") from None
    return proc.returncode, out, err


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def same_state(a, b, where: str = "") -> None:
    """Assert two checkpoint states are equal, tensors bit for bit."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same_state(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif hasattr(a, "shape"):     # numpy RNG state
        assert (a == b).all(), where
    else:
        assert a == b, where
