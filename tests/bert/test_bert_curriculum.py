"""BERT with the seqreo_voc curriculum over an analyzer index of its own training samples."""
from __future__ import annotations

import math

import numpy as np
import pytest

import pretrain_bert
from megatron.data_efficiency.analyzer.analyzer import AnalyzerConfig
from megatron.data_efficiency.analyzer.bert_samples import BertSampleParams, run_bert_analyzer
from megatron.data_efficiency.analyzer.index_io import MetricIndex, percentile_end
from test_pretrain_bert import _flags

ITERS, GBS, SEQ = 8, 8, 32


def test_seqreo_voc_curriculum_runs_and_shortens_batches(bert_data, bert_index):
    state = pretrain_bert.main(_flags(
        bert_data, "--log-interval", "1", "--eval-iters", "0",
        "--data-efficiency-curriculum-learning", "--curriculum-metric", "seqreo_voc",
        "--curriculum-index-path", bert_index + "/seqlen_voc",
        "--curriculum-difficulty-type", "percentile", "--curriculum-min-difficulty", "3",
        "--curriculum-max-difficulty", "100", "--curriculum-schedule-type", "fixed_linear",
        "--curriculum-total-steps", "1000", "--curriculum-difficulty-step", "1",
        iters=ITERS))
    assert state.iteration == ITERS
    assert all(math.isfinite(loss) for _, loss in state.history)
    # Only the easiest 3% are admitted in the first 8 of 1000 pacing steps, and seqreo cuts
    # each batch to its longest real sample (a multiple of 8): bound it with 4%.
    index = MetricIndex.open(bert_index + "/seqlen_voc")
    admitted = index.sorted_samples[:percentile_end(index.num_samples, 4)]
    longest = int(np.max(index.sample_to_metric[admitted] >> index.meta["voc_bits"]))
    cut = -(-longest // 8) * 8
    assert cut < SEQ
    assert 0 < state.consumed_tokens <= ITERS * GBS * cut


def test_index_of_other_samples_prints_the_analyzer_command(bert_data, tmp_path):
    """A BERT run whose index was built for other samples (another seed) stops with the
    analyzer command that indexes its own samples, BERT flags included."""
    cfg = AnalyzerConfig(data_prefix=bert_data["data"], save_path=str(tmp_path / "index"),
                         metrics=("seqlen_voc",), granularity="sample", split="80,15,5",
                         seq_length=SEQ, seed=12, train_samples=ITERS * GBS,
                         cache_dir=bert_data["dir"], progress=False)
    run_bert_analyzer(cfg, BertSampleParams())
    with pytest.raises(ValueError, match="fingerprint") as info:
        pretrain_bert.main(_flags(
            bert_data, "--eval-iters", "0", "--data-efficiency-curriculum-learning",
            "--curriculum-metric", "seqreo_voc",
            "--curriculum-index-path", str(tmp_path / "index" / "seqlen_voc"),
            "--curriculum-difficulty-type", "percentile", "--curriculum-min-difficulty", "3",
            "--curriculum-max-difficulty", "100", "--curriculum-total-steps", "1000",
            iters=ITERS))
    message = str(info.value)
    assert "python tools/analyze_data.py" in message and "--model bert" in message
    assert "--seed 11 " in message and f"--train-samples {ITERS * GBS} " in message
