"""BERT with DeepSpeed's dynamic_batching: token-budget batches from the analyzer's seqlen
metric, the LR scaled per step, exact resume, and the refusals."""
from __future__ import annotations

import json

import numpy as np
import pytest

import pretrain_bert
from megatron.data.bert_dataset import build_train_valid_test_datasets
from megatron.data.data_loader import build_pretraining_data_loader
from megatron.data_efficiency.analyzer.index_io import MetricIndex
from megatron.data_efficiency.config import config_from_dict
from megatron.data_efficiency.dynamic_batching.packing import pack, scaled_lr
from megatron.data_efficiency.runtime import DataEfficiencyRuntime, Parallelism
from megatron.data_efficiency.step_plan import RunShape, StepPlanner
from megatron.errors import CheckpointError
from megatron.metrics_file import read_metrics
from megatron.optimizer_param_scheduler import build_schedule_config, lr_at
from megatron.tokenizer import build_tokenizer
from test_pretrain_bert import _flags

ITERS, GBS, MBS, MAX_TOKENS, LR = 4, 8, 2, 64, 3e-3


@pytest.fixture(scope="module")
def seqlen_index(bert_index) -> str:
    """The analyzer's output folder holding the seqlen metric of the runs' samples."""
    return bert_index


def _config(tmp_path, index: str, **batching) -> str:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"data_efficiency": {"enabled": True, "seed": 5, "data_sampling": {
        "dynamic_batching": {"enabled": True, "max_tokens": MAX_TOKENS, "metrics_path": index,
                             "lr_scaling_method": "linear", **batching}}}}))
    return str(path)


def _run(bert_data, config: str, *extra: str, iters: int = ITERS):
    """The BERT test run with the LR scheduled on consumed tokens (no step warmup)."""
    flags = _flags(bert_data, "--micro-batch-size", str(MBS), "--log-interval", "1",
                   "--eval-iters", "0", "--lr-warmup-tokens", "100", "--lr-decay-tokens",
                   "2000", "--data-efficiency-config", config, *extra, iters=iters)
    i = flags.index("--lr-warmup-iters")
    return pretrain_bert.main(flags[:i] + flags[i + 2:])


@pytest.fixture(scope="module")
def straight(bert_data, seqlen_index, tmp_path_factory) -> dict:
    """ITERS steps in one go, random picking order, prefetching loaders (--num-workers 2),
    with a metrics file."""
    tmp = tmp_path_factory.mktemp("dynbatch_run")
    config = _config(tmp, seqlen_index, sequence_picking_order="random")
    metrics = str(tmp / "metrics.jsonl")
    state = _run(bert_data, config, "--num-workers", "2", "--metrics-file", metrics)
    return {"state": state, "config": config, "metrics": metrics}


def test_dynamic_batching_trains_bert_with_deepspeeds_batches_and_lrs(straight, seqlen_index):
    """The steps take pack()'s batches (checked against DeepSpeed's own function in
    tests/data_efficiency/compat/test_deepspeed_dynamic_batching.py): samples, real tokens
    and the LR of the consumed-token schedule scaled by samples / global batch."""
    state = straight["state"]
    seqlens = np.asarray(MetricIndex.open(seqlen_index + "/seqlen").sample_to_metric)
    plan = pack(seqlens, MAX_TOKENS, GBS, order="random", seed=5)
    sizes = plan.batch_sizes()
    assert len(set(sizes[:ITERS])) > 1, sizes                 # batches of varying samples
    steps = read_metrics(straight["metrics"]).steps
    k = np.arange(ITERS) % plan.num_batches
    assert [steps[i + 1]["global_batch_size"] for i in range(ITERS)] == [sizes[j] for j in k]
    assert [steps[i + 1]["step_tokens"] for i in range(ITERS)] == \
        [plan.batch_tokens(j) for j in k]
    assert state.consumed_samples == sum(sizes[j] for j in k)
    assert state.consumed_tokens == sum(plan.batch_tokens(j) for j in k)
    schedule = build_schedule_config(LR, 3e-4, "cosine", (100, "tokens"), (2000, "tokens"),
                                     GBS, 32)
    for i in range(ITERS):   # logged: the LR of the next step, scaled to its batch
        base = lr_at(steps[i + 1]["consumed_tokens"], schedule)
        expected = scaled_lr(base, GBS, sizes[(i + 1) % plan.num_batches], "linear")
        assert steps[i + 1]["learning_rate"] == pytest.approx(expected, rel=1e-12), i
        assert steps[i + 1]["plan"]["batching/samples"] == sizes[i % plan.num_batches]


def test_a_seqlen_index_of_other_samples_is_refused(bert_data, straight):
    """(--dataloader-type cyclic beside dynamic_batching is refused with the flag checks:
    tests/training/test_arguments.py.)"""
    with pytest.raises(ValueError, match="fingerprint") as info:   # another --seed's samples
        _run(bert_data, straight["config"], "--seed", "13")
    assert "python tools/analyze_data.py" in str(info.value) and "--model bert" in str(info.value)


def check_exact_resume(bert_data, straight: dict, tmp_path) -> str:
    """2 steps and a save, then a run with --load for the rest, both with prefetching
    loaders (--num-workers 2), equal ``straight``'s run (losses, samples, tokens); returns
    the checkpoint folder."""
    config, workers = straight["config"], ("--num-workers", "2")
    ckpt = str(tmp_path / "ckpt")
    first = _run(bert_data, config, *workers, "--save", ckpt, "--exit-interval", "2")
    resumed = _run(bert_data, config, *workers, "--load", ckpt)
    assert (first.iteration, resumed.iteration) == (2, ITERS)
    assert first.history + resumed.history == straight["state"].history
    assert (resumed.consumed_samples, resumed.consumed_tokens) == \
        (straight["state"].consumed_samples, straight["state"].consumed_tokens)
    return ckpt


def test_resume_is_exact(bert_data, straight, seqlen_index, tmp_path):
    """2 steps, save, a new run with --load, 2 more == the straight run, with prefetching
    loaders: the packing's position comes back from the checkpoint and the batches and
    losses are the same; a resume with other dynamic_batching settings is refused (the
    checkpoint's run record) unless --override-data-efficiency-state."""
    ckpt = check_exact_resume(bert_data, straight, tmp_path)
    config = straight["config"]
    other = _config(tmp_path, seqlen_index, sequence_picking_order="seqlen")
    with pytest.raises(CheckpointError, match="sequence_picking_order: random -> seqlen "
                                              r"\(accept with --override-data-efficiency"):
        _run(bert_data, other, "--load", ckpt)
    accepted = _run(bert_data, other, "--load", ckpt, "--override-data-efficiency-state")
    assert accepted.iteration == ITERS     # the new packing's batches from iteration 2 on


def test_data_parallel_ranks_take_their_share_of_the_plan(bert_data, seqlen_index, tmp_path):
    """Two DP ranks' runtimes, each packing the file itself as on its own process, with
    prefetching loaders (--num-workers 2): every micro-batch passes the feed's check of
    its ids and length against the rank's share of the plan, and the ranks' micro-batches
    of a step are together exactly the step's samples."""
    tok = build_tokenizer("BertWordPieceLowerCase", vocab_file=bert_data["vocab"])
    train = build_train_valid_test_datasets([bert_data["data"]], "80,15,5", [ITERS * GBS, 0, 0],
                                            32, 0.15, 0.1, 11, tok, cache_dir=bert_data["dir"])[0]
    with open(_config(tmp_path, seqlen_index, sequence_picking_order="random")) as f:
        config = config_from_dict(json.load(f))
    shape = RunShape(GBS, 32, 2, seed=5, model="bert", num_microbatches=GBS // (MBS * 2))
    seen: dict[int, list[int]] = {1: [], 2: []}
    for rank in (0, 1):
        runtime = DataEfficiencyRuntime(StepPlanner(config, shape), Parallelism(rank, 2))
        sampler = runtime.train_batch_sampler(train, MBS, first_iteration=1)
        batches = iter(build_pretraining_data_loader(train, 0, MBS, rank, 2, num_workers=2,
                                                     batch_sampler=sampler))
        for step in (1, 2):
            plan = runtime.plan_step(step)
            for m in range(shape.num_microbatches):
                batch, got = runtime.prepare_microbatch(next(batches), plan, MBS, m)
                seen[step] += batch["sample_id"].tolist()
                assert batch["text"].shape == (got.rows, got.seq_length)
                assert got.seq_length < 32 or batch["padding_mask"][:, -1].any()
    plan = pack(np.asarray(MetricIndex.open(seqlen_index + "/seqlen").sample_to_metric),
                MAX_TOKENS, GBS, order="random", seed=5)
    for step in (1, 2):
        lo, hi = plan.unit_offsets[step * GBS], plan.unit_offsets[(step + 1) * GBS]
        assert sorted(seen[step]) == sorted(plan.sample_ids[lo:hi].tolist())
