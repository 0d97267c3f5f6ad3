"""Multi-rank runs and resumed runs give the same bytes as one clean single-process run."""

import filecmp
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import analyzer_testlib as lib
from megatron.data_efficiency.analyzer.analyzer import AnalyzerConfig, run_analyzer
from megatron.data_efficiency.analyzer.blend import run_blend_analyzer
from megatron.data_efficiency.analyzer.shards import ShardLimitReached

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
TOOL = os.path.join(ROOT, "tools", "analyze_data.py")
MPIEXEC = shutil.which("mpiexec") or os.path.join(os.path.dirname(sys.executable), "mpiexec")
METRICS = ["seqlen", "voc", "seqlen_voc", "total_vocab_freq"]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([ROOT, os.path.dirname(__file__), env.get("PYTHONPATH", "")])
    env["PATH"] = os.path.dirname(MPIEXEC) + os.pathsep + env.get("PATH", "")
    return env


def _tool(args, ranks=None):
    cmd = [sys.executable, TOOL] + args
    if ranks:
        cmd = [MPIEXEC, "-n", str(ranks)] + cmd
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)


def _same_tree(a, b):
    files = sorted(os.path.relpath(os.path.join(d, f), a) for d, _, fs in os.walk(a) for f in fs)
    other = sorted(os.path.relpath(os.path.join(d, f), b) for d, _, fs in os.walk(b) for f in fs)
    assert files == other and files
    _, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert not mismatch and not errors, mismatch + errors


@pytest.fixture(scope="module")
def mpi_ok():
    if not os.path.exists(MPIEXEC):
        pytest.skip(f"mpiexec not found at {MPIEXEC}")
    hello = [MPIEXEC, "-n", "2", sys.executable, "-c", "from mpi4py import MPI; print(MPI.COMM_WORLD.Get_size())"]
    try:
        r = subprocess.run(hello, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"mpiexec cannot start: {e}")
    if r.returncode != 0 or r.stdout.count("2") != 2:  # two ranks print "2" (lines may interleave)
        pytest.skip(f"mpiexec -n 2 with mpi4py does not start here: {r.stderr[-300:]}")


def test_two_ranks_byte_identical_document(tmp_path, mpi_ok):
    prefix = lib.make_store(str(tmp_path / "ds"), lib.random_docs(seed=4))
    common = ["--data-path", prefix, "--metrics", *METRICS, "--metric-fn", "analyzer_testlib:mean_token",
              "--shard-tokens", "60", "--chunk-tokens", "11", "--quiet"]
    one = _tool(common + ["--save-path", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr
    two = _tool(common + ["--save-path", str(tmp_path / "two"), "--shard-tokens", "200"], ranks=2)
    assert two.returncode == 0, two.stderr
    _same_tree(str(tmp_path / "one"), str(tmp_path / "two"))


def test_two_ranks_byte_identical_sample(tmp_path, mpi_ok):
    prefix = lib.make_store(str(tmp_path / "ds"), lib.random_docs(seed=5, multi_sequence=False))
    common = ["--data-path", prefix, "--granularity", "sample", "--split", "90,10,0", "--seq-length", "6",
              "--train-samples", "120", "--seed", "7", "--metrics", *METRICS,
              "--data-cache-path", str(tmp_path / "cache"), "--metric-fn", "analyzer_testlib:distinct",
              "--shard-tokens", "70", "--quiet"]
    one = _tool(common + ["--save-path", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr
    two = _tool(common + ["--save-path", str(tmp_path / "two"), "--num-workers", "2"])  # launches mpiexec
    assert two.returncode == 0, two.stderr
    _same_tree(str(tmp_path / "one"), str(tmp_path / "two"))


def test_two_ranks_byte_identical_blend(tmp_path, mpi_ok):
    """A blend's stores are mapped by both ranks, its ids split between them (other shard
    sizes: the output does not depend on them either)."""
    a = lib.make_store(str(tmp_path / "a"), lib.random_docs(seed=5, multi_sequence=False))
    b = lib.make_store(str(tmp_path / "b"), lib.random_docs(seed=6, n_docs=50), np.int32)
    data_path, cache = ("0.4", a, "0.6", b), str(tmp_path / "cache")
    run_blend_analyzer(AnalyzerConfig(" ".join(data_path), str(tmp_path / "one"),
                                      data_path=data_path, metrics=tuple(METRICS),
                                      metric_fns=("analyzer_testlib:distinct",),
                                      granularity="sample", split="90,10,0", seq_length=6,
                                      seed=7, train_samples=120, cache_dir=cache,
                                      shard_tokens=30, progress=False))
    two = _tool(["--data-path", *data_path, "--granularity", "sample", "--split", "90,10,0",
                 "--seq-length", "6", "--train-samples", "120", "--seed", "7",
                 "--metrics", *METRICS, "--metric-fn", "analyzer_testlib:distinct",
                 "--data-cache-path", cache, "--shard-tokens", "70",
                 "--quiet", "--save-path", str(tmp_path / "two"), "--num-workers", "2"])
    assert two.returncode == 0, two.stderr
    _same_tree(str(tmp_path / "one"), str(tmp_path / "two"))


def test_killed_mid_map_then_restarted_equals_clean_run(tmp_path):
    prefix = lib.make_store(str(tmp_path / "ds"), lib.random_docs(seed=6))
    kw = dict(metrics=tuple(METRICS), metric_fns=("analyzer_testlib:distinct",), shard_tokens=40,
              chunk_tokens=9, progress=False)
    clean = run_analyzer(AnalyzerConfig(prefix, str(tmp_path / "clean"), **kw))
    with pytest.raises(ShardLimitReached):  # the "kill": the map stops after 5 new shards
        run_analyzer(AnalyzerConfig(prefix, str(tmp_path / "resumed"), fail_after_shards=5, **kw))
    assert os.listdir(tmp_path / "resumed") == [".analyzer_work"]  # no index published
    resumed = run_analyzer(AnalyzerConfig(prefix, str(tmp_path / "resumed"), **kw))
    assert resumed["shards_reused"] == 5
    assert resumed["shards_computed"] == clean["shards_computed"] - 5
    _same_tree(str(tmp_path / "clean"), str(tmp_path / "resumed"))


def test_half_written_shard_is_not_trusted(tmp_path):
    prefix = lib.make_store(str(tmp_path / "ds"), lib.random_docs(seed=7))
    kw = dict(metrics=("voc",), shard_tokens=40, progress=False)
    run_analyzer(AnalyzerConfig(prefix, str(tmp_path / "clean"), **kw))
    with pytest.raises(ShardLimitReached):
        run_analyzer(AnalyzerConfig(prefix, str(tmp_path / "r"), fail_after_shards=2, **kw))
    work = tmp_path / "r" / ".analyzer_work"
    (folder,) = os.listdir(work)
    # A shard killed while being written only ever exists under its temp name.
    np.savez(str(work / folder / "counts-3.npz.tmp999.npz"), c=np.arange(3))
    run_analyzer(AnalyzerConfig(prefix, str(tmp_path / "r"), **kw))
    _same_tree(str(tmp_path / "clean"), str(tmp_path / "r"))
