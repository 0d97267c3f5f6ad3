"""pretrain_gpt.py's real pretrain() on 2 gloo ranks (torchrun-style env) against 1 rank.

A tiny random-token corpus, dropout off, --use-cpu-initialization: TP2 and DP2 (with the
distributed optimizer) must log the same per-step lm loss as the single-process run, and
PP2 (1F1B over 4 micro-batches) must train and report its losses on the last stage.
"""
from __future__ import annotations

import numpy as np
import pytest

from megatron.data.indexed_dataset import MMapIndexedDatasetBuilder
from tests.dist_utils import run_distributed

ITERS = 3


def _corpus(prefix: str) -> None:
    rng = np.random.default_rng(0)
    builder = MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for _ in range(40):
        builder.add_item(rng.integers(0, 63, size=int(rng.integers(20, 60))))
        builder.end_document()
    builder.finalize(prefix + ".idx")


def _flags(prefix: str, extra: list[str]) -> list[str]:
    return ["--num-layers", "4", "--hidden-size", "32", "--num-attention-heads", "4",
            "--seq-length", "16", "--max-position-embeddings", "16", "--vocab-size", "64",
            "--make-vocab-size-divisible-by", "32",
            "--micro-batch-size", "2", "--global-batch-size", "8", "--lr", "3e-3",
            "--adam-eps", "1e-3", "--train-iters", str(ITERS), "--eval-iters", "0",
            "--log-interval", "1", "--hidden-dropout", "0", "--attention-dropout", "0",
            "--use-cpu-initialization", "--distributed-timeout-minutes", "1",
            "--data-path", prefix, "--split", "100,0,0", "--seed", "7", "--num-workers", "0",
            *extra]


def _pretrain_worker(rank: int, world_size: int, prefix: str,
                     runs: list[list[str]]) -> list[list[tuple[int, float]]]:
    import pretrain_gpt  # the real entry point's providers
    from megatron.training import pretrain
    histories = []
    for extra in runs:
        state = pretrain(pretrain_gpt.train_valid_test_datasets_provider,
                         pretrain_gpt.model_provider, pretrain_gpt.forward_step,
                         argv=_flags(prefix, extra))
        histories.append(state.history)
    return histories


@pytest.mark.slow
def test_pretrain_gpt_two_ranks_matches_one(tmp_path):
    prefix = str(tmp_path / "corpus")
    _corpus(prefix)
    (reference,) = run_distributed(_pretrain_worker, 1, prefix, [[]], timeout_s=180)[0]
    runs = [["--tensor-model-parallel-size", "2"], ["--use-distributed-optimizer"],
            ["--pipeline-model-parallel-size", "2"]]
    per_rank = run_distributed(_pretrain_worker, 2, prefix, runs, timeout_s=240)
    assert [it for it, _ in reference] == list(range(1, ITERS + 1))
    ref_losses = np.array([loss for _, loss in reference])
    for name, i in (("TP2", 0), ("DP2+distopt", 1)):
        last_rank = per_rank[-1][i]
        np.testing.assert_allclose([loss for _, loss in last_rank], ref_losses, rtol=1e-5,
                                   err_msg=name)
    pipeline_last = per_rank[1][2]
    assert [it for it, _ in pipeline_last] == list(range(1, ITERS + 1))
    assert np.all(np.isfinite([loss for _, loss in pipeline_last]))
    assert per_rank[0][2] == []  # the first stage computes no loss
