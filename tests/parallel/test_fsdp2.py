"""FSDP2 (``--use-torch-fsdp2`` / ``--zero-stage 2|3``) through the real pretrain().

With the seqtru curriculum and random-LTD on (sequence lengths change between steps, layers
see varying token counts) and the LR schedule on consumed tokens, DP2 (ZeRO stage 3 and stage 2 with full recompute), DP4 and
DP2 x TP2 must log the single-process run's per-step lm loss; a run saved at iteration 2
and resumed must log exactly (bitwise) the uninterrupted run's iteration 3; the sharded
run's checkpoint is in the plain format (a plain DP2 run resumes from it); bf16 compute
stays close to the single-process bf16 run. The flag mapping and the refusals are checked
without ranks. Per-micro-batch parity, the clipped global gradient norm and the final
weights under FSDP2 are checked by test_gpt_layouts (``Layout(fsdp=...)``).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from megatron.arguments import (ArgumentValidationError, parse_args, run_config_from_args,
                                validate_args)
from tests.parallel.test_pretrain_e2e import DATA_EFFICIENCY, ITERS, _corpus, _pretrain_worker

# the LR schedule on consumed tokens (warmup, then decay; layer-weighted under random-LTD)
TOKEN_LR = ["--lr-warmup-tokens", "64", "--lr-decay-tokens", "400"]
DE = [*DATA_EFFICIENCY, *TOKEN_LR]
FSDP3 = ["--use-torch-fsdp2", *DE]
_FOLDERS: dict[int, str] = {}


def _losses(history) -> list[float]:
    return [loss for _, loss in history]


def two_rank_jobs(tmp_path_factory) -> dict:
    folder = str(tmp_path_factory.mktemp("fsdp2"))
    _FOLDERS[2] = folder
    prefix, ckpt = os.path.join(folder, "corpus"), os.path.join(folder, "ckpt")
    _corpus(prefix)
    runs = [FSDP3,
            ["--zero-stage", "3", *DE, "--save", ckpt, "--exit-interval", "1"],
            ["--zero-stage", "3", *DE, "--load", ckpt],
            [*DE, "--load", ckpt],              # plain DP2 from the FSDP2 files
            ["--zero-stage", "2", "--recompute-granularity", "full", *DE],
            ["--use-torch-fsdp2", "--bf16"]]
    return {"fsdp2": (_pretrain_worker, prefix, runs)}


def four_rank_jobs(tmp_path_factory) -> dict:
    folder = str(tmp_path_factory.mktemp("fsdp4"))
    _FOLDERS[4] = folder
    prefix = os.path.join(folder, "corpus")
    _corpus(prefix)
    runs = [FSDP3, [*FSDP3, "--tensor-model-parallel-size", "2"]]
    return {"fsdp4": (_pretrain_worker, prefix, runs)}


def _reference(world: int, extra: list[str]) -> list[float]:
    ((history, _),) = _pretrain_worker(0, 1, os.path.join(_FOLDERS[world], "corpus"), [extra])
    assert len(history) == ITERS
    return _losses(history)


@pytest.mark.slow
def test_fsdp2_two_ranks_match_one_and_resume_exactly(two_rank_spawn):
    ref = _reference(2, DE)
    runs = [history for history, _ in two_rank_spawn["fsdp2"][-1]]   # the logging rank
    np.testing.assert_allclose(_losses(runs[0]), ref, rtol=1e-5, err_msg="DP2 FSDP2")
    np.testing.assert_allclose(_losses(runs[4]), ref, rtol=1e-5,
                               err_msg="DP2 ZeRO-2 + recompute")
    # saved after step 1: steps 2 and 3 use the loaded Adam moments
    assert [it for it, _ in runs[1]] == [1] and runs[1] == runs[0][:1]
    assert runs[2] == runs[0][1:], "resume from the FSDP2 checkpoint is not bit-exact"
    # the sharded run's checkpoint is the plain format: plain data parallel continues it
    np.testing.assert_allclose(_losses(runs[3]), _losses(runs[0][1:]), rtol=1e-5)
    bf16_ref = _reference(2, ["--bf16"])
    np.testing.assert_allclose(_losses(runs[5]), bf16_ref, rtol=2e-2, err_msg="bf16")


@pytest.mark.slow
def test_fsdp2_dp4_and_dp2_tp2_match_one(four_rank_spawn):
    ref = _reference(4, DE)
    for name, i in (("DP4", 0), ("DP2xTP2", 1)):
        history, _ = four_rank_spawn["fsdp4"][-1][i]
        np.testing.assert_allclose(_losses(history), ref, rtol=1e-5, err_msg=name)


BASE = ["--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "2",
        "--seq-length", "16", "--micro-batch-size", "2", "--lr", "1e-3", "--vocab-size", "64",
        "--train-iters", "2"]


def _validate(*extra: str):
    return validate_args(parse_args(args=BASE + list(extra)))


@pytest.mark.parametrize("flags, reshard", [(["--use-torch-fsdp2"], True),
                                            (["--zero-stage", "3"], True),
                                            (["--zero-stage", "2"], False),
                                            (["--zero-stage", "3", "--use-torch-fsdp2"], True)])
def test_zero_stages_map_onto_fsdp2(flags, reshard):
    args = _validate(*flags)
    assert args.use_torch_fsdp2 and not args.use_distributed_optimizer
    assert run_config_from_args(args).parallel.fsdp.reshard_after_forward is reshard


def test_bf16_computes_in_bf16_over_fp32_shards():
    config = run_config_from_args(_validate("--use-torch-fsdp2", "--bf16")).parallel.fsdp
    assert config.param_dtype == torch.bfloat16


@pytest.mark.parametrize("flags, named", [
    (["--use-torch-fsdp2", "--pipeline-model-parallel-size", "2"],
     "--use-torch-fsdp2 with --pipeline-model-parallel-size 2"),
    (["--zero-stage", "3", "--use-distributed-optimizer"],
     "ZeRO stage 3 (FSDP2) with --use-distributed-optimizer"),
    (["--use-torch-fsdp2", "--fp16"], "--use-torch-fsdp2 with --fp16"),
    (["--zero-stage", "2", "--num-experts", "2"], "ZeRO stage 2 (FSDP2) with --num-experts"),
    (["--use-torch-fsdp2", "--zero-stage", "1"], "--use-torch-fsdp2 contradicts ZeRO stage 1"),
    (["--zero-stage", "4"], "ZeRO stage 4"),
    (["--zero-stage", "3", "--ckpt-format", "torch_dist"],
     "--ckpt-format torch_dist does not yet describe FSDP2's sharded parameters"),
])
def test_what_does_not_compose_is_refused_by_name(flags, named):
    with pytest.raises(ArgumentValidationError) as info:
        _validate(*flags)
    assert named in str(info.value)


def test_fsdp2_without_a_process_group_says_how_to_launch():
    from megatron.core.distributed import fsdp
    with pytest.raises(RuntimeError, match="launch with torchrun"):
        fsdp.fully_shard_chunk(torch.nn.Linear(2, 2), [], fsdp.FSDPConfig())
