"""Step plans and the data-efficiency runtime: one frozen plan per step, pure in
(config, iteration), composing the curriculum transform, random-LTD and token accounting."""
import dataclasses

import pytest
import torch

from megatron.data_efficiency.config import (CurriculumConfig, CurriculumMetricConfig,
                                             DataEfficiencyConfig, config_from_dict)
from megatron.data_efficiency.curriculum.scheduler import ScheduleConfig
from megatron.data_efficiency.random_ltd import RandomLTDConfig, mslg_kept_length
from megatron.data_efficiency.runtime import DataEfficiencyRuntime
from megatron.data_efficiency.step_plan import RunShape, StepPlanner
from megatron.data_efficiency.token_accounting import tokens_per_step

GBS, SEQ, LAYERS = 8, 128, 6


def _seqtru(d_min=16, steps=10, kind="seqtru") -> CurriculumConfig:
    cfg = config_from_dict({"data_efficiency": {"enabled": True, "data_sampling": {"enabled": True,
        "curriculum_learning": {"enabled": True, "curriculum_metrics": {kind: {
            "min_difficulty": d_min, "max_difficulty": SEQ, "schedule_type": "fixed_linear",
            "schedule_config": {"total_curriculum_step": steps, "difficulty_step": 8}}}}}}})
    return cfg.curriculum


def _ltd(r_s=32, steps=20) -> RandomLTDConfig:
    return RandomLTDConfig(enabled=True, min_seqlen=r_s, max_seqlen=SEQ, total_steps=steps,
                           seq_per_step=16)


def _config(curriculum=None, random_ltd=None) -> DataEfficiencyConfig:
    return DataEfficiencyConfig(enabled=True, curriculum=curriculum or CurriculumConfig(),
                                random_ltd=random_ltd or RandomLTDConfig())


def _planner(curriculum=None, random_ltd=None, **shape) -> StepPlanner:
    shape = {"global_batch_size": GBS, "seq_length": SEQ, "num_layers": LAYERS, "seed": 3,
             "num_microbatches": 2, **shape}
    return StepPlanner(_config(curriculum, random_ltd), RunShape(**shape))


def test_plain_plan_counts_full_batches_and_logs_nothing():
    planner = _planner()
    for it in (0, 50):
        plan = planner.plan(it)
        assert (plan.rows, plan.seq_length, plan.consumed_tokens) == (GBS, SEQ, GBS * SEQ)
        assert plan.scalars() == {} and plan.token_drop_plan(0, 4, SEQ, 0) is None
    assert planner.steps_for_tokens(10 * GBS * SEQ) == 10


def test_seqtru_with_random_ltd_plans_every_step_from_the_pure_schedules():
    planner = _planner(_seqtru(), _ltd())
    for it in range(25):
        plan = planner.plan(it)
        d = min(SEQ, max(16, (16 + (it + 1) * 112 // 10) // 8 * 8))   # curriculum step it + 1
        r = min(mslg_kept_length(it, 32, SEQ, 20, 16), d)
        assert (plan.seq_length, plan.kept_length is not None) == (d, True)
        assert plan.consumed_tokens == tokens_per_step(GBS, d, LAYERS, LAYERS - 2, r)
        assert plan.scalars() == {"curriculum/seqtru": d, "seqlen/curriculum_seqlen": d,
                                  "seqlen/actual_seq_length": d,
                                  "seqlen/random_ltd_reserved_length": r}
        drop = plan.token_drop_plan(1, 4, d, dp_rank=0)
        assert (drop is None) == (r >= d)
        if drop is not None:
            assert drop.kept_length == r and drop.layer_ids == frozenset(range(1, LAYERS - 1))
            assert drop.indices.shape == (LAYERS - 2, 4, r) and drop.iteration == it
    assert planner.plan(0).seq_length == 24 and planner.plan(0).consumed_tokens == GBS * 24
    assert planner.plan(30).consumed_tokens == GBS * SEQ            # both schedules finished
    assert planner.steps_for_tokens(30 * GBS * SEQ) > 30            # short early steps


def test_plans_are_pure_in_the_iteration():
    """No schedule state: any order of asking gives the same frozen plans."""
    a, b = _planner(_seqtru(), _ltd()), _planner(_seqtru(), _ltd())
    forward = [a.plan(it) for it in range(30)]
    backward = [b.plan(it) for it in reversed(range(30))][::-1]
    assert forward == backward
    with pytest.raises(dataclasses.FrozenInstanceError):
        forward[0].seq_length = 5


def test_a_kept_length_at_or_above_the_length_drops_nothing():
    """Layers that keep as many tokens as the (curriculum-truncated) sequence has, or more,
    count the whole sequence: the kept length never adds tokens."""
    full = tokens_per_step(4, 64, num_layers=4)
    assert tokens_per_step(4, 64, 4, 2, kept_length=64) == full == 4 * 64
    assert tokens_per_step(4, 64, 4, 2, kept_length=128) == full
    assert tokens_per_step(4, 64, 4, 2, kept_length=32) == 4 * ((64 * 2 + 32 * 2) // 4)


def test_seqres_counts_the_real_rows():
    plan = _planner(_seqtru(kind="seqres")).plan(0)
    assert (plan.seq_length, plan.rows) == (24, GBS * (SEQ // 24))
    assert plan.consumed_tokens == GBS * (SEQ // 24) * 24


def test_pipeline_refuses_shape_changing_transforms():
    with pytest.raises(ValueError, match="seqres"):
        _planner(_seqtru(kind="seqres"), pipeline_stages=2)
    _planner(_seqtru(), pipeline_stages=2)


def _seqreo_runtime() -> DataEfficiencyRuntime:
    metric = CurriculumMetricConfig(name="seqlen", kind="index", difficulty_type="value",
                                    clustering_type="schedule_based", index_path="unused",
                                    schedule=ScheduleConfig("fixed_linear", 8, SEQ, 10, 8))
    cl = CurriculumConfig(enabled=True, metrics=[metric])
    return DataEfficiencyRuntime(StepPlanner(_config(cl), RunShape(4, SEQ, LAYERS, model="bert",
                                                                   num_microbatches=2)))


def test_seqreo_plan_is_completed_from_the_lengths_it_saw():
    rt = _seqreo_runtime()
    plan = rt.plan_step(0)
    assert plan.data_dependent and plan.transform == "seqreo"
    shapes = []
    for m, real in enumerate((10, 30)):                 # two micro-batches of 2 rows
        mask = torch.zeros(2, SEQ, dtype=torch.long)
        mask[:, :real] = 1
        batch, shape = rt.prepare_microbatch({"text": torch.ones(2, SEQ, dtype=torch.long),
                                              "padding_mask": mask}, plan, 2)
        assert batch["text"].shape[1] == -(-real // 8) * 8 == shape.seq_length
        shapes.append(shape)
    done = rt.finish_step(plan, shapes)
    assert done.consumed_tokens == 2 * 16 + 2 * 32 and done.seq_length == 32
    assert done.scalars()["seqlen/actual_seq_length"] == 32
    assert rt.steps_for_tokens(10 ** 6) is None


def _seqreo_dp_rank(rank: int, world_size: int) -> tuple[int, int, int]:
    from megatron.data_efficiency.curriculum.transforms import BatchShape, seqreo
    from megatron.data_efficiency.runtime import Parallelism
    group = torch.distributed.group.WORLD
    mask = torch.zeros(2, 64, dtype=torch.long)
    mask[:, : 3 + 20 * rank] = 1                                # rank 1 has the longest
    _, cut = seqreo({"text": torch.zeros(2, 64), "padding_mask": mask}, group=group)
    rt = _seqreo_runtime()
    rt.par = Parallelism(dp_rank=rank, dp_size=world_size, dp_group=group)
    # each rank saw its own rows: 2 x 16 tokens on rank 0, 2 x 32 on rank 1
    done = rt.finish_step(rt.plan_step(0), [BatchShape(2, 16 * (rank + 1))])
    return cut.seq_length, done.consumed_tokens, done.seq_length


def two_rank_jobs(tmp_path_factory) -> dict:
    """This module's job in the session's shared 2-rank spawn (tests/conftest.py)."""
    return {"seqreo_dp": (_seqreo_dp_rank,)}


def test_seqreo_agrees_across_data_parallel_ranks_and_sums_their_tokens(two_rank_spawn):
    """The seqreo cut is the longest real sample over DP ranks (rounded up to 8); the
    step's tokens are every DP rank's rows, summed (the step's length is the maximum),
    the same on every rank."""
    assert two_rank_spawn["seqreo_dp"] == [(24, 2 * 16 + 2 * 32, 32)] * 2


def test_feed_check_refuses_a_batch_that_is_not_the_plans():
    rt = DataEfficiencyRuntime(StepPlanner(_config(_seqtru()), RunShape(GBS, SEQ, LAYERS)))
    plan = rt.plan_step(0)                                 # 24 tokens
    ok, shape = rt.prepare_microbatch({"text": torch.zeros(4, SEQ + 1, dtype=torch.long)},
                                      plan, 4)
    assert ok["text"].shape == (4, 25) and ok["seq_length"] == 24 == shape.seq_length
    with pytest.raises(RuntimeError, match="step plan says 4 x 24"):
        rt.prepare_microbatch({"text": torch.zeros(2, SEQ + 1, dtype=torch.long)}, plan, 4)


def test_state_is_only_what_cannot_be_recomputed():
    rt = DataEfficiencyRuntime(_planner(_seqtru(), _ltd(), num_microbatches=1))
    assert rt.state_dict(5) == {}   # no sampler: schedules are pure (settings: run record)
    plain = DataEfficiencyRuntime(StepPlanner(_config(), RunShape(GBS, SEQ, LAYERS)))
    assert plain.state_dict(5) == {} and plain.train_batch_sampler(None, 2, 0) is None


def _deepspeed_yields(num_epochs: float, epoch: int, per_microbatch: int) -> int:
    """Micro-batches DeepSpeedDataSampler.__iter__ (0.19.8) yields before it stops: it
    loops ``while consumed_samples <= one_epoch_total_samples * num_epochs``, yielding one
    micro-batch of every DP rank (``per_microbatch`` samples) per turn."""
    consumed = yields = 0
    while consumed <= epoch * num_epochs:
        consumed += per_microbatch
        yields += 1
    return yields


@pytest.mark.parametrize("num_epochs, epoch, mbs, dp, gbs",
                         [(1, 40, 2, 1, 4), (0.5, 40, 2, 2, 8), (2, 13, 1, 3, 6), (0.1, 97, 4, 1, 8)])
def test_num_epochs_bounds_the_samples_a_run_draws(num_epochs, epoch, mbs, dp, gbs):
    """A run is refused up front exactly when DeepSpeed's sampler would run dry before its
    last step (which ended the run mid-way there), with and without a curriculum sampler."""
    from megatron.data_efficiency.runtime import Parallelism
    from megatron.errors import BadConfigError
    steps_possible = _deepspeed_yields(num_epochs, epoch, mbs * dp) // (gbs // (mbs * dp))
    dataset = [None] * epoch
    for curriculum in (CurriculumConfig(), _seqtru()):
        cfg = dataclasses.replace(_config(curriculum), num_epochs=num_epochs, source="ds.json")
        rt = DataEfficiencyRuntime(StepPlanner(cfg, RunShape(gbs, SEQ, LAYERS)),
                                   Parallelism(0, dp))
        assert rt.train_batch_sampler(dataset, mbs, 0, None, train_iters=steps_possible) is None
        with pytest.raises(BadConfigError) as err:
            rt.train_batch_sampler(dataset, mbs, 0, None, train_iters=steps_possible + 1)
        msg = str(err.value)
        assert f"num_epochs {num_epochs}" in msg and f"draws {(steps_possible + 1) * gbs}" in msg
        assert f"the {epoch} samples of the training set" in msg
    unbounded = DataEfficiencyRuntime(StepPlanner(_config(), RunShape(gbs, SEQ, LAYERS)),
                                      Parallelism(0, dp))
    assert unbounded.train_batch_sampler(dataset, mbs, 0, None, train_iters=10 ** 6) is None


def test_random_ltd_draws_follow_the_sample_not_the_data_parallel_size():
    """Rank r's micro-batch m holds the step's global micro-batch m x DP + r (both
    samplers), so it drops what one process drops in that micro-batch: DP2 and DP4 runs
    then train exactly as one process does."""
    from megatron.data_efficiency.runtime import Parallelism
    one = DataEfficiencyRuntime(_planner(_seqtru(), _ltd(), num_microbatches=4))
    plan = one.plan_step(8)
    assert plan.kept_length is not None and plan.kept_length < plan.seq_length
    for dp in (2, 4):
        for rank in range(dp):
            rt = DataEfficiencyRuntime(_planner(_seqtru(), _ltd(), num_microbatches=4 // dp),
                                       Parallelism(dp_rank=rank, dp_size=dp))
            for m in range(4 // dp):
                mine = rt.token_drop_plan(rt.plan_step(8), m, 2, plan.seq_length)
                same = one.token_drop_plan(plan, m * dp + rank, 2, plan.seq_length)
                assert torch.equal(mine.indices, same.indices), (dp, rank, m)
