"""pretrain_gpt.py as a user runs it: each problem a user can fix prints one ``error:``
line and no traceback, exits 1 (2 for a flag or config-file error); MEGATRON_TRACEBACK=1 shows the traceback; a flag error
is printed once, by rank 0 only."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from megatron.data_efficiency.analyzer.analyzer import AnalyzerConfig, run_analyzer
from megatron.errors import BadInputError, CheckpointError, format_error
from tests.token_store import write_random_store
from tests.training.helpers import VOCAB, tiny_gpt_flags

ROOT = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("entry")
    prefix = str(root / "corpus")
    write_random_store(prefix, VOCAB, 120, (5, 60))
    # an index of another seed's samples: the training run below must refuse it
    run_analyzer(AnalyzerConfig(data_prefix=prefix, save_path=str(root / "index"),
                                metrics=("total_vocab_freq", "voc"), granularity="sample",
                                split="90,10,0", seq_length=16, seed=99, train_samples=24,
                                progress=False))
    return root, prefix


def _start(*flags: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "pretrain_gpt.py"),
                             *tiny_gpt_flags("--eval-iters", "0", *flags, iters=2)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def _wait(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _run_all(runs: dict[str, tuple], at_once: int = 3) -> dict[str, subprocess.CompletedProcess]:
    """``{name: (flags, env)}`` run as separate processes, ``at_once`` at a time (they are
    mostly interpreter start-up, which overlaps well)."""
    pending, running, done = list(runs.items()), [], {}
    while pending or running:
        while pending and len(running) < at_once:
            name, (flags, env) = pending.pop(0)
            running.append((name, _start(*flags, env=env)))
        name, proc = running.pop(0)
        done[name] = _wait(proc)
    return done


def _one_error_line(proc: subprocess.CompletedProcess, returncode: int = 1) -> str:
    assert proc.returncode == returncode, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("error:")]
    assert len(starts) == 1, proc.stderr
    # the message: the error line and its indented continuation (validate_args lists
    # each problem on its own line)
    message = [lines[starts[0]]]
    message += [line for line in lines[starts[0] + 1:] if line.startswith(" ")]
    return "\n".join(message)


def test_probes_print_one_error_line(store):
    root, prefix = store
    data = ("--data-path", prefix, "--split", "90,10,0")
    # damaged store: a .bin cut short
    damaged = str(root / "damaged")
    for ext in (".idx", ".bin"):
        with open(prefix + ext, "rb") as src, open(damaged + ext, "wb") as dst:
            blob = src.read()
            dst.write(blob if ext == ".idx" else blob[:len(blob) // 2])
    bad_json = root / "bad.json"
    bad_json.write_text('{"data_efficiency": {"enabled": true,,}}')
    bad_tracker = root / "ckpt"
    bad_tracker.mkdir()
    (bad_tracker / "latest_checkpointed_iteration.txt").write_text("iter seven")
    voc = ["--data-efficiency-curriculum-learning", "--curriculum-metric", "voc",
           "--curriculum-index-path", str(root / "index" / "voc"),
           "--curriculum-difficulty-type", "percentile", "--curriculum-min-difficulty", "10",
           "--curriculum-max-difficulty", "100", "--curriculum-schedule-type", "fixed_linear",
           "--curriculum-total-steps", "2", "--curriculum-difficulty-step", "1"]
    probes = {
        "missing data": ((*data[:1], str(root / "nope"), *data[2:]), "nope.idx"),
        "damaged store": (("--data-path", damaged, "--split", "90,10,0"), "damaged.bin"),
        "missing tokenizer": (("--tokenizer-type", "GPTSentencePieceTokenizer",
                               "--tokenizer-model", str(root / "no.model")), "no.model"),
        "mismatched index": ((*data, *voc), "fingerprint"),
        "bad JSON": (("--data-efficiency-config", str(bad_json)), "not valid JSON"),
        "bad tracker": (("--load", str(bad_tracker)), "iter seven"),
    }
    # a bad config file is found by validate_args (with the other flag errors): exit 2
    returncodes = {"bad JSON": 2}
    results = _run_all({name: (flags, None) for name, (flags, _) in probes.items()})
    for name, (flags, expected) in probes.items():
        line = _one_error_line(results[name], returncodes.get(name, 1))
        assert expected in line, (name, line)


def test_traceback_on_request_and_validation_errors_stay_one_line(store):
    root, _ = store
    runs = _run_all({
        "shown": (("--data-path", str(root / "nope"), "--split", "90,10,0"),
                  {"MEGATRON_TRACEBACK": "1"}),
        "bad_lr": (("--lr", "0", "--min-lr", "0"), None),
        # a flag error is the same on every rank: rank 1 stays silent
        "silent": (("--lr", "-1", "--min-lr", "0"), {"RANK": "1"})})
    shown, bad_lr, silent = runs["shown"], runs["bad_lr"], runs["silent"]
    assert shown.returncode == 1 and "Traceback" in shown.stderr
    assert "MissingInputError" in shown.stderr
    assert bad_lr.returncode == 2 and "--lr must be > 0, got 0.0" in bad_lr.stderr
    assert "Traceback" not in bad_lr.stderr
    assert silent.returncode == 2 and "error:" not in silent.stderr


def test_error_lines_name_the_failing_rank_only_for_rank_local_errors():
    shared = CheckpointError("ckpt/latest_checkpointed_iteration.txt: bad")
    assert format_error(shared, 0) == "error: ckpt/latest_checkpointed_iteration.txt: bad"
    assert format_error(shared, 3) is None

    class LocalError(BadInputError):
        same_on_all_ranks = False
    assert format_error(LocalError("disk"), 3) == "error: rank 3: disk"
    with pytest.raises(ValueError):      # still the built-in type older callers catch
        raise BadInputError(json.dumps({"x": 1}))


def test_sigterm_to_the_process_group_saves_and_exits_0(store, tmp_path):
    """As a scheduler does it: SIGTERM to the whole group (main process and its 2 DataLoader
    workers) mid-run; the step finishes, a checkpoint is saved, the exit code is 0."""
    import signal
    _, prefix = store
    ckpt = tmp_path / "ckpt"
    argv = tiny_gpt_flags("--data-path", prefix, "--split", "90,10,0", "--num-workers", "2",
                          "--eval-iters", "0", "--exit-signal-handler", "--save", str(ckpt),
                          iters=100000)
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "pretrain_gpt.py"), *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        for line in proc.stdout:             # wait until training runs
            if "iteration        3/" in line:
                break
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-3000:]
    assert "received SIGTERM" in err and "saved checkpoint at iteration" in out
    assert "exiting at iteration" in out and \
        ": received SIGTERM (--exit-signal-handler)" in out   # the real cause is named
    saved = int((ckpt / "latest_checkpointed_iteration.txt").read_text())
    assert 3 <= saved < 100000 and (ckpt / f"iter_{saved:07d}").is_dir()
