"""pretrain_gpt.py's real pretrain() on 2 gloo ranks (torchrun-style env) against 1 rank.

A tiny random-token corpus, dropout off, --use-cpu-initialization (so every layout starts
from the single-process weights): TP2, DP2 (with the distributed optimizer), PP2 (1F1B over
4 micro-batches) and PP2 x V2 (interleaved 1F1B, --num-layers-per-virtual-pipeline-stage 1)
must log the same per-step lm loss as the single-process run; the interleaved run's
checkpoint stores the two model chunks as model0 / model1 and resumes from them.
With the seqtru curriculum and random-LTD on, TP2 and PP2 (each stage dropping in its own
layers, with the sequence length changing between steps) match the single-process run too:
the token-drop draws need no communication.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from megatron.data.indexed_dataset import MMapIndexedDatasetBuilder

ITERS = 3
# seqtru 8 -> 16 tokens and random-LTD (layers 1 and 2 keep 8 tokens, then all) over 2 steps
DATA_EFFICIENCY = ["--data-efficiency-curriculum-learning", "--curriculum-metric", "seqtru",
                   "--curriculum-min-difficulty", "8", "--curriculum-max-difficulty", "16",
                   "--curriculum-total-steps", "2", "--curriculum-difficulty-step", "8",
                   "--random-ltd", "--random-ltd-min-seqlen", "8",
                   "--random-ltd-total-steps", "2", "--random-ltd-seq-per-step", "8"]


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
            "--adam-eps", "1e-3", "--train-iters", str(ITERS), "--eval-iters", "1",
            "--log-interval", "1", "--hidden-dropout", "0", "--attention-dropout", "0",
            "--use-cpu-initialization", "--distributed-timeout-minutes", "1",
            "--data-path", prefix, "--split", "80,20,0", "--seed", "7", "--num-workers", "0",
            *extra]


def _pretrain_worker(rank: int, world_size: int, prefix: str,
                     runs: list[list[str]]) -> list[tuple[list, dict]]:
    import pretrain_gpt  # the real entry point's providers
    from megatron.core.enums import ModelType
    from megatron.training import pretrain
    histories = []
    for extra in runs:
        state = pretrain(pretrain_gpt.train_valid_test_datasets_provider,
                         pretrain_gpt.model_provider, ModelType.encoder_or_decoder, pretrain_gpt.forward_step,
                         argv=_flags(prefix, extra))
        histories.append((state.history, state.last_validation))
    return histories


_FOLDER: list[str] = []   # the runs' folder, set when the shared spawn's jobs are built


def two_rank_jobs(tmp_path_factory) -> dict:
    """The 2-rank job (run in the session's shared spawn, tests/conftest.py): writes the
    corpus; the interleaved run checkpoints into ``FOLDER/ckpt`` and is resumed."""
    folder = str(tmp_path_factory.mktemp("e2e"))
    _FOLDER[:] = [folder]
    prefix, ckpt = os.path.join(folder, "corpus"), os.path.join(folder, "ckpt")
    _corpus(prefix)
    interleaved = ["--pipeline-model-parallel-size", "2",
                   "--num-layers-per-virtual-pipeline-stage", "1"]
    runs = [["--tensor-model-parallel-size", "2"], ["--use-distributed-optimizer"],
            ["--pipeline-model-parallel-size", "2"], [*interleaved, "--save", ckpt],
            # a longer run changes the decay span: Megatron's --override-opt_param-scheduler
            [*interleaved, "--load", ckpt, "--train-iters", str(ITERS + 1),
             "--override-opt_param-scheduler"],
            ["--tensor-model-parallel-size", "2", *DATA_EFFICIENCY],
            ["--pipeline-model-parallel-size", "2", *DATA_EFFICIENCY]]
    return {"e2e": (_pretrain_worker, prefix, runs)}


@pytest.mark.slow
def test_pretrain_gpt_two_ranks_matches_one(two_rank_spawn):
    folder = _FOLDER[0]
    per_rank = two_rank_spawn["e2e"]
    # the single-process reference runs here, in the test process (no process group)
    ((reference, ref_valid),) = _pretrain_worker(0, 1, os.path.join(folder, "corpus"), [[]])
    ckpt = os.path.join(folder, "ckpt")
    assert [it for it, _ in reference] == list(range(1, ITERS + 1))
    ref_losses = np.array([loss for _, loss in reference])
    for name, i in (("TP2", 0), ("DP2+distopt", 1), ("PP2", 2), ("PP2xV2", 3)):
        last_rank, valid = per_rank[-1][i]
        assert valid["lm loss"] == pytest.approx(ref_valid["lm loss"], rel=1e-5), name
        assert [it for it, _ in last_rank] == list(range(1, ITERS + 1)), name
        np.testing.assert_allclose([loss for _, loss in last_rank], ref_losses, rtol=1e-5,
                                   err_msg=name)
    assert per_rank[0][2] == per_rank[0][3] == ([], {})  # the first stage computes no loss
    stage_file = os.path.join(ckpt, f"iter_{ITERS:07d}", "mp_rank_00_001", "model_optim_rng.pt")
    saved = torch.load(stage_file, weights_only=False)
    assert "model" not in saved \
        and saved["run_config"]["parallel"]["virtual_pipeline_model_parallel_size"] == 2
    # stage 1's chunks: virtual stages 1 and 3 (global layers 1 and 3; 3 ends the model)
    assert "transformer.final_layernorm.weight" in saved["model1"]
    assert "transformer.final_layernorm.weight" not in saved["model0"]
    resumed = per_rank[-1][4][0]
    assert [it for it, _ in resumed] == [ITERS + 1] and np.isfinite(resumed[0][1])


@pytest.mark.slow
def test_curriculum_and_random_ltd_under_tp2_and_pp2_match_one(two_rank_spawn):
    folder = _FOLDER[0]
    per_rank = two_rank_spawn["e2e"]
    ((reference, _),) = _pretrain_worker(0, 1, os.path.join(folder, "corpus"),
                                         [DATA_EFFICIENCY])
    ref_losses = [loss for _, loss in reference]
    assert len(ref_losses) == ITERS
    for name, i in (("TP2", 5), ("PP2", 6)):
        last_rank, _ = per_rank[-1][i]
        np.testing.assert_allclose([loss for _, loss in last_rank], ref_losses, rtol=1e-5,
                                   err_msg=name)
