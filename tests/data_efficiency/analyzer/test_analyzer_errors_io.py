"""Index reading API, fingerprint refusal, and clear errors on bad input."""

import os
import subprocess
import sys

import numpy as np
import pytest

import analyzer_testlib as lib
from megatron.data_efficiency.analyzer.analyzer import AnalyzerConfig, fingerprint_of, run_analyzer
from megatron.data_efficiency.analyzer.index_io import (MetricIndex, dataset_fingerprint,
                                                         write_metric_index)

TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "..", "tools", "analyze_data.py")


@pytest.fixture
def store(tmp_path):
    return lib.make_store(str(tmp_path / "ds"), lib.random_docs(seed=8))


def _run(prefix, out, **kw):
    kw.setdefault("metrics", ("seqlen",))
    return run_analyzer(AnalyzerConfig(prefix, str(out), shard_tokens=64, progress=False, **kw))


def test_metric_index_queries_match_brute_force(tmp_path, store):
    _run(store, tmp_path / "out", metrics=("voc",))
    idx = MetricIndex.open(str(tmp_path / "out" / "voc"), fingerprint_of(AnalyzerConfig(store, "")))
    vals = np.asarray(idx.sample_to_metric)
    for v in [-1.0, 0.0, float(np.median(vals)), float(vals.max()), 1e9]:
        assert idx.samples_at_or_below(v) == int((vals <= v).sum())
        assert set(idx.sorted_samples[:idx.samples_at_or_below(v)]) == set(np.flatnonzero(vals <= v))
    for p, expected in [(0, 0), (12.5, len(vals) // 8), (50, len(vals) // 2), (100, len(vals))]:
        assert idx.percentile_end(p) == expected
    with pytest.raises(ValueError, match="percentile"):
        idx.percentile_end(101)


def test_write_metric_index_same_bytes_as_analyzer(tmp_path, store):
    _run(store, tmp_path / "out", metrics=("seqlen",))
    vals = np.load(tmp_path / "out" / "seqlen" / "sample_to_metric.npy")
    meta = MetricIndex.open(str(tmp_path / "out" / "seqlen")).meta
    extra = {k: meta[k] for k in ("granularity", "data_prefix", "pad_token_id")}
    write_metric_index(str(tmp_path / "w" / "seqlen"), "seqlen", vals, meta["fingerprint"], extra)
    for name in os.listdir(tmp_path / "out" / "seqlen"):
        a = (tmp_path / "out" / "seqlen" / name).read_bytes()
        assert a == (tmp_path / "w" / "seqlen" / name).read_bytes(), name


def test_index_of_other_data_is_refused(tmp_path, store):
    other = lib.make_store(str(tmp_path / "other"), lib.random_docs(seed=9))
    _run(store, tmp_path / "out")
    folder = str(tmp_path / "out" / "seqlen")
    fp_other = dataset_fingerprint(other, "document")
    assert fp_other != dataset_fingerprint(store, "document")
    with pytest.raises(ValueError, match="fingerprint") as err:
        MetricIndex.open(folder, fp_other)
    assert folder in str(err.value)
    # Same data, other sample-index parameters: also a different fingerprint.
    a = dataset_fingerprint(store, "sample", "90,10,0", 8, 1, 100)
    assert a != dataset_fingerprint(store, "sample", "90,10,0", 16, 1, 100)
    assert a == dataset_fingerprint(store, "sample", "90,10,0", 8, 1, 100)


def test_incomplete_index_is_refused(tmp_path, store):
    _run(store, tmp_path / "out")
    os.remove(tmp_path / "out" / "seqlen" / "offsets.npy")
    with pytest.raises(ValueError, match="missing file offsets.npy"):
        MetricIndex.open(str(tmp_path / "out" / "seqlen"))


@pytest.mark.parametrize("fn, message", [
    ("wrong_length", r"shape \(\d+,\) for a batch of \d+ samples \(ids \d+\.\.\d+\)"),
    ("nan_for_empty", r"sample \d+ has non-finite value nan"),
    ("inf_for_long", r"sample \d+ has non-finite value inf"),
    ("no_such_function", "has no attribute"),
])
def test_bad_user_metric_is_a_clear_error(tmp_path, store, fn, message):
    with pytest.raises(ValueError, match=message):
        _run(store, tmp_path / "out", metric_fns=(f"analyzer_testlib:{fn}",))
    out = tmp_path / "out"  # nothing half-written: no metric folder, no temp folder
    assert not out.exists() or not [f for f in os.listdir(out) if not f.startswith(".analyzer_work")]


def test_nan_error_names_the_right_sample(tmp_path, store):
    with pytest.raises(ValueError) as err:
        _run(store, tmp_path / "out", metric_fns=("analyzer_testlib:nan_for_empty",))
    first_empty = next(i for i, d in enumerate(lib.random_docs(seed=8)) if sum(len(s) for s in d) == 0)
    assert f"sample {first_empty} " in str(err.value)


def test_tool_reports_missing_files_and_bad_vocab(tmp_path, store):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, TOOL, "--data-path", str(tmp_path / "nope"), "--save-path",
                        str(tmp_path / "o")], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and str(tmp_path / "nope") + ".idx" in r.stderr
    r = subprocess.run([sys.executable, TOOL, "--data-path", store, "--save-path", str(tmp_path / "o"),
                        "--metrics", "voc", "--vocab-size", "5", "--quiet"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "--vocab-size 5" in r.stderr and store in r.stderr
    r = subprocess.run([sys.executable, TOOL, "--data-path", store, "--save-path", str(tmp_path / "o"),
                        "--metrics", "bogus"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "bogus" in r.stderr
    assert not os.path.exists(tmp_path / "o") or not [f for f in os.listdir(tmp_path / "o")
                                                     if not f.startswith(".analyzer_work")]


def test_quiet_prints_nothing_not_even_the_dataset_lines(tmp_path, store):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, TOOL, "--data-path", store, "--save-path", str(tmp_path / "o"),
                        "--granularity", "sample", "--split", "90,10,0", "--seq-length", "16",
                        "--train-samples", "20", "--metrics", "voc", "--quiet"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == ""
    assert os.path.isfile(tmp_path / "o" / "voc" / "meta.json")
