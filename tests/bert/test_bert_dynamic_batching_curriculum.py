"""BERT with dynamic_batching composed with a curriculum: the curriculum (a seqlen index
metric and a truncation, seqtru) decides which samples, the packing packs them into
units of at most max_tokens step by step; the LR per step and an exact resume."""
from __future__ import annotations

import json

import numpy as np
import pytest

import pretrain_bert
from megatron.data.bert_dataset import build_train_valid_test_datasets
from megatron.data_efficiency.analyzer.index_io import MetricIndex
from megatron.data_efficiency.config import config_from_dict
from megatron.data_efficiency.dynamic_batching.packing import scaled_lr
from megatron.data_efficiency.runtime import DataEfficiencyRuntime
from megatron.data_efficiency.step_plan import RunShape, StepPlanner
from megatron.metrics_file import read_metrics
from megatron.optimizer_param_scheduler import build_schedule_config, lr_at
from megatron.tokenizer import build_tokenizer
from test_bert_dynamic_batching import (GBS, ITERS, LR, MAX_TOKENS, MBS, _config, _run,
                                        check_exact_resume)


def curriculum_config(path, index: str) -> str:
    """Samples of seqlen <= 16 .. 32 admitted (value), truncated to 8 .. 32 tokens."""
    pacing = {"schedule_type": "fixed_linear", "difficulty_type": "value",
              "schedule_config": {"total_curriculum_step": 6, "difficulty_step": 8}}
    path.write_text(json.dumps({"data_efficiency": {"enabled": True, "seed": 5, "data_sampling": {
        "enabled": True,
        "curriculum_learning": {"enabled": True, "curriculum_metrics": {
            "seqlen": {"index_path": index + "/seqlen", "clustering_type": "schedule_based",
                       "min_difficulty": 16, "max_difficulty": 32, **pacing},
            "seqlen_truncate": {"min_difficulty": 8, "max_difficulty": 32, **pacing}}},
        "dynamic_batching": {"enabled": True, "max_tokens": MAX_TOKENS, "metrics_path": index,
                             "max_batch_size": 6}}}}))
    return str(path)


@pytest.fixture(scope="module")
def composed(bert_data, bert_index, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("dynbatch_curriculum")
    config = curriculum_config(tmp / "ds.json", bert_index)
    metrics = str(tmp / "metrics.jsonl")
    sampled: dict[int, list] = {}       # step -> its samples' seqlen (TensorBoard histogram)
    original = DataEfficiencyRuntime.finish_step

    def recording(self, plan, observed):
        done = original(self, plan, observed)
        sampled[plan.iteration + 1] = sorted(done.sampled_values["curriculum/seqlen_sampled"]
                                             .tolist())
        return done
    DataEfficiencyRuntime.finish_step = recording
    try:
        state = _run(bert_data, config, "--num-workers", "2", "--metrics-file", metrics)
    finally:
        DataEfficiencyRuntime.finish_step = original
    return {"state": state, "config": config, "metrics": metrics, "tb": sampled}


def _steps(bert_data, config: str, iters: int) -> list:
    """The packed steps, planned again in this process as any rank plans them."""
    tok = build_tokenizer("BertWordPieceLowerCase", vocab_file=bert_data["vocab"])
    train = build_train_valid_test_datasets([bert_data["data"]], "80,15,5", [ITERS * GBS, 0, 0],
                                            32, 0.15, 0.1, 11, tok, cache_dir=bert_data["dir"])[0]
    with open(config) as f:
        de = config_from_dict(json.load(f))
    shape = RunShape(GBS, 32, 2, seed=5, model="bert", num_microbatches=GBS // MBS)
    runtime = DataEfficiencyRuntime(StepPlanner(de, shape))
    runtime.train_batch_sampler(train, MBS, first_iteration=0)
    return [runtime.planner.step_batch(k) for k in range(iters)]


def test_each_step_packs_samples_the_curriculum_admits_into_token_budget_units(
        composed, bert_data, bert_index):
    """Every step trains the packing of the curriculum's draws: each sample within the
    step's seqlen difficulty, each unit at most max_tokens of the truncated lengths and 6
    samples, GBS units; the logged samples / real tokens are the plan's; the LR is the
    consumed-token schedule's times samples / GBS; the carried sample opens the next step."""
    seqlens = np.asarray(MetricIndex.open(bert_index + "/seqlen").sample_to_metric)
    steps = read_metrics(composed["metrics"]).steps
    planned = _steps(bert_data, composed["config"], ITERS + 1)
    schedule = build_schedule_config(LR, 3e-4, "cosine", (100, "tokens"), (2000, "tokens"),
                                     GBS, 32)
    assert len({b.samples for b in planned}) > 1
    for i, batch in enumerate(planned[:ITERS]):
        logged = steps[i + 1]
        limit, cut = logged["plan"]["curriculum/seqlen"], logged["plan"]["curriculum/seqlen_truncate"]
        tb = batch.batches
        ids, units = tb.sample_ids, tb.microbatch_ids()
        assert (logged["global_batch_size"], logged["step_tokens"]) == (batch.samples, batch.tokens)
        assert len(units) == GBS and all(1 <= len(u) <= 6 for u in units)
        assert np.all(seqlens[ids] <= limit)
        assert batch.truncate == cut and batch.tokens == int(np.minimum(seqlens[ids], cut).sum())
        assert all(np.minimum(seqlens[u], cut).sum() <= MAX_TOKENS for u in units)
        assert composed["tb"][i + 1] == sorted(seqlens[ids].tolist())  # sampled values
        base = lr_at(logged["consumed_tokens"], schedule)
        expected = scaled_lr(base, GBS, planned[i + 1].samples, "linear")
        assert logged["learning_rate"] == pytest.approx(expected, rel=1e-12), i
    first_cut = steps[1]["plan"]["curriculum/seqlen_truncate"]
    assert first_cut == 8 and planned[0].longest == 8     # truncated: 8 tokens at step 1
    assert composed["state"].consumed_samples == sum(b.samples for b in planned[:ITERS])
    assert composed["state"].consumed_tokens == sum(b.tokens for b in planned[:ITERS])


def test_resume_is_exact(composed, bert_data, bert_index, tmp_path):
    """2 steps, save, resume with prefetching loaders (which packed steps ahead): the
    packing's state before step 3 comes back from the checkpoint, same batches and losses.
    Resumed with other settings and --override-data-efficiency-state, the packing starts
    afresh at the resumed step."""
    ckpt = check_exact_resume(bert_data, composed, tmp_path)
    other = json.loads(open(composed["config"]).read())
    other["data_efficiency"]["data_sampling"]["dynamic_batching"]["max_batch_size"] = 5
    (tmp_path / "other.json").write_text(json.dumps(other))
    state = _run(bert_data, str(tmp_path / "other.json"), "--load", ckpt,
                 "--override-data-efficiency-state")
    assert state.iteration == ITERS


# -- two data-parallel ranks against one process --------------------------------------------
DP_ITERS = 3
# one unit a micro-batch (so one process's micro-batches are the two ranks' together) and no
# dropout: the same losses up to the order of the sums
DP_FLAGS = ("--micro-batch-size", "1", "--hidden-dropout", "0", "--attention-dropout", "0")
_DP: dict[str, object] = {}   # the jobs' configs, set when the shared spawn's jobs are built


def _dp_worker(rank: int, world_size: int, data: dict, configs: list[str]) -> list[tuple]:
    """Each config's run on this rank: losses, consumed samples and tokens, and the ids of
    every micro-batch this rank trained (``(iteration, micro-batch, ids)``)."""
    seen: list[tuple] = []
    original = DataEfficiencyRuntime.prepare_microbatch

    def recording(self, batch, plan, micro_batch_size, microbatch=0):
        out = original(self, batch, plan, micro_batch_size, microbatch)
        seen.append((plan.iteration, microbatch, out[0]["sample_id"].tolist()))
        return out
    DataEfficiencyRuntime.prepare_microbatch = recording
    try:
        results = []
        for config in configs:
            seen.clear()
            state = _run(data, config, *DP_FLAGS, iters=DP_ITERS)
            results.append((state.history, state.consumed_samples, state.consumed_tokens,
                            list(seen)))
        return results
    finally:
        DataEfficiencyRuntime.prepare_microbatch = original


def two_rank_jobs(tmp_path_factory) -> dict:
    """The DP2 runs (in the session's shared 2-rank spawn, tests/conftest.py): the dataset
    packed once (random order) and the packing composed with the curriculum."""
    from tests.bert.bert_corpus import bert_data_paths, bert_index_path
    data, index = bert_data_paths(tmp_path_factory), bert_index_path(tmp_path_factory)
    tmp = tmp_path_factory.mktemp("dynbatch_dp")
    configs = [_config(tmp, index, sequence_picking_order="random"),
               curriculum_config(tmp / "curriculum.json", index)]
    _DP.update(data=data, configs=configs)
    return {"bert_dynamic_batching_dp2": (_dp_worker, data, configs)}


def test_two_data_parallel_ranks_train_as_one_process(two_rank_spawn):
    """DP2 (two processes, each planning the steps itself) against one process with the
    same seed: the same losses, consumed samples and real tokens; rank r's micro-batch m of
    a step is unit r + 2m of the step's plan; with and without the curriculum."""
    per_rank = two_rank_spawn["bert_dynamic_batching_dp2"]
    data, configs = _DP["data"], _DP["configs"]
    reference = _dp_worker(0, 1, data, configs)
    for c, config in enumerate(configs):
        losses, samples, tokens, _ = reference[c]
        planned = _steps(data, config, DP_ITERS)
        for rank in (0, 1):
            history, dp_samples, dp_tokens, seen = per_rank[rank][c]
            assert (dp_samples, dp_tokens) == (samples, tokens), (c, rank)
            np.testing.assert_allclose([x for _, x in history], [x for _, x in losses],
                                       rtol=1e-5, err_msg=str(c))
            assert seen == [(k, m, planned[k].microbatch(rank, 2, m, 1)[0].tolist())
                            for k in range(DP_ITERS) for m in range(GBS // 2)], (c, rank)
            assert all(len(ids) for _, _, ids in seen)
        assert samples == sum(b.samples for b in planned)
