"""Analyzer indexes: their arrays are validated whenever they are opened (training, the
prune tool and the inspector share MetricIndex.open), and the analyzer does not replace an
index made from other data or with other settings without --force."""
from __future__ import annotations

import os

import numpy as np
import pytest

from megatron.data_efficiency.analyzer.analyzer import AnalyzerConfig, run_analyzer
from megatron.data_efficiency.analyzer.index_checks import validate_index_arrays
from megatron.data_efficiency.analyzer.index_io import MetricIndex, save_npy, write_metric_index


@pytest.fixture()
def index(tmp_path):
    """A valid index of 60 samples with ties (values 0..6)."""
    path = str(tmp_path / "seqlen")
    write_metric_index(path, "seqlen", np.random.default_rng(0).integers(0, 7, 60), "fp")
    return path


@pytest.mark.parametrize("damage,message", [
    (lambda ss: ss[::-1], "not sorted by \\(value, id\\)|values / offsets disagree"),
    (lambda ss: np.concatenate([ss[:1], ss[:-1]]), "not a permutation"),
    (lambda ss: np.concatenate([ss[:10], ss[11:12], ss[10:11], ss[12:]]),
     "not sorted|values / offsets disagree"),
])
def test_a_damaged_index_is_refused_on_load(index, damage, message):
    validate_index_arrays(MetricIndex.open(index), chunk=7)   # chunk edges on the way
    ss = np.load(os.path.join(index, "sorted_samples.npy"))
    save_npy(os.path.join(index, "sorted_samples.npy"), damage(ss).astype(np.int64))
    with pytest.raises(ValueError, match=f"is damaged: .*({message})"):
        MetricIndex.open(index)


def test_a_swap_inside_one_value_group_breaks_the_id_order(index):
    s2m = np.load(os.path.join(index, "sample_to_metric.npy"))
    ss = np.load(os.path.join(index, "sorted_samples.npy"))
    first = np.flatnonzero(s2m[ss] == s2m[ss][0])[:2]         # two ids of the lowest value
    ss[first] = ss[first[::-1]]
    save_npy(os.path.join(index, "sorted_samples.npy"), ss)
    for chunk in (1, 7, 1 << 20):                              # across and inside chunks
        with pytest.raises(ValueError, match="not sorted by \\(value, id\\)"):
            validate_index_arrays(MetricIndex(index, {"metric": "seqlen"}, {
                name: np.load(os.path.join(index, name)) for name in (
                    "sample_to_metric.npy", "sorted_samples.npy", "values.npy",
                    "offsets.npy")}), chunk=chunk)


def test_the_analyzer_does_not_replace_an_index_made_with_other_settings(corpus, tmp_path):
    out = str(tmp_path / "index")

    def analyze(**kw):
        return run_analyzer(AnalyzerConfig(data_prefix=corpus.store, save_path=out,
                                           metrics=("seqlen",), progress=False, **kw))
    analyze()
    values = np.load(os.path.join(out, "seqlen", "sample_to_metric.npy"))
    analyze()                                      # the same settings: a rerun is fine
    eod = 262
    with pytest.raises(ValueError, match=r"seqlen \(pad_token_id None -> 262\).*--force"):
        analyze(pad_token_id=eod)
    np.testing.assert_array_equal(np.load(os.path.join(out, "seqlen", "sample_to_metric.npy")),
                                  values)          # untouched
    analyze(pad_token_id=eod, force=True)
    assert (np.load(os.path.join(out, "seqlen", "sample_to_metric.npy")) < values).any()
