"""The data-efficiency runtime: curriculum transform + random-LTD + token accounting composed
behind the one interface the training loop calls."""
import pytest
import torch

from megatron.data_efficiency.config import (CurriculumConfig, CurriculumMetricConfig,
                                             config_from_dict)
from megatron.data_efficiency.curriculum.scheduler import ScheduleConfig
from megatron.data_efficiency.random_ltd import RandomLTDConfig, RandomLTDScheduler
from megatron.data_efficiency.runtime import DataEfficiencyRuntime, Parallelism, RunShape
from megatron.data_efficiency.token_accounting import tokens_per_step

GBS, SEQ, LAYERS = 8, 128, 6


def _seqtru(d_min=16, steps=10, kind="seqtru") -> CurriculumConfig:
    cfg = config_from_dict({"data_efficiency": {"enabled": True, "data_sampling": {"enabled": True,
        "curriculum_learning": {"enabled": True, "curriculum_metrics": {kind: {
            "min_difficulty": d_min, "max_difficulty": SEQ, "schedule_type": "fixed_linear",
            "schedule_config": {"total_curriculum_step": steps, "difficulty_step": 8}}}}}}})
    return cfg.curriculum


def _ltd(r_s=32, steps=20) -> RandomLTDScheduler:
    cfg = RandomLTDConfig(enabled=True, min_seqlen=r_s, max_seqlen=SEQ, total_steps=steps,
                          seq_per_step=16)
    return RandomLTDScheduler(cfg, LAYERS, SEQ, seed=3)


def test_plain_runtime_counts_full_batches():
    rt = DataEfficiencyRuntime(RunShape(GBS, SEQ, LAYERS))
    assert [rt.tokens_for_step(i) for i in (0, 50)] == [GBS * SEQ] * 2
    assert rt.token_drop_plan(0, 0, SEQ) is None and rt.tensorboard_scalars(1) == {}
    assert rt.steps_for_tokens(10 * GBS * SEQ) == 10


def test_seqtru_with_random_ltd_counts_layer_tokens_of_the_truncated_length():
    rt = DataEfficiencyRuntime(RunShape(GBS, SEQ, LAYERS), _seqtru(), _ltd())
    for it in range(0, 25):
        d = rt.seq_length_for_step(it)
        assert d == min(SEQ, rt.transform.difficulty(it))
        r = min(rt.random_ltd.kept_length(it), d)
        assert rt.tokens_for_step(it) == tokens_per_step(GBS, d, LAYERS, LAYERS - 2, r)
        plan = rt.token_drop_plan(it, 0, d)
        assert (plan is None) == (r >= d)
        if plan is not None:
            assert plan.kept_length == r and plan.layer_ids == frozenset(range(1, LAYERS - 1))
    # iteration 0 is DeepSpeed's curriculum step 1: floor(1/10 * 112 + 16) = 27 -> 24 tokens,
    # and every layer keeps them all (r_s = 32 > 24)
    assert rt.seq_length_for_step(0) == 24 and rt.tokens_for_step(0) == GBS * 24
    assert rt.tokens_for_step(30) == GBS * SEQ            # both schedules finished
    nominal = 30 * GBS * SEQ
    assert rt.steps_for_tokens(nominal) > 30              # short early steps: more of them


def test_transform_truncates_training_batches_and_logs_the_names_users_know():
    rt = DataEfficiencyRuntime(RunShape(GBS, SEQ, LAYERS), _seqtru(), _ltd())
    batch = rt.transform_batch({"text": torch.arange(2 * (SEQ + 1)).view(2, SEQ + 1)}, 0)
    assert batch["text"].shape == (2, 25) and batch["seq_length"] == 24
    scalars = rt.tensorboard_scalars(1)
    assert scalars["curriculum/seqtru"] == 24 and scalars["seqlen/curriculum_seqlen"] == 24
    assert scalars["seqlen/actual_seq_length"] == 24
    assert scalars["seqlen/random_ltd_reserved_length"] == 24


def test_seqres_counts_the_real_rows():
    rt = DataEfficiencyRuntime(RunShape(GBS, SEQ, LAYERS), _seqtru(kind="seqres"))
    assert rt.seq_length_for_step(0) == 24
    assert rt.tokens_for_step(0) == GBS * (SEQ // 24) * 24


def test_pipeline_refuses_shape_changing_transforms():
    with pytest.raises(ValueError, match="seqres"):
        DataEfficiencyRuntime(RunShape(GBS, SEQ, LAYERS), _seqtru(kind="seqres"),
                              parallelism=Parallelism(pp_size=2))
    DataEfficiencyRuntime(RunShape(GBS, SEQ, LAYERS), _seqtru(), parallelism=Parallelism(pp_size=2))


def test_seqreo_counts_the_lengths_it_saw():
    metric = CurriculumMetricConfig(name="seqlen", kind="index", difficulty_type="value",
                                    clustering_type="schedule_based", index_path="unused",
                                    schedule=ScheduleConfig("fixed_linear", 8, SEQ, 10, 8))
    cl = CurriculumConfig(enabled=True, metrics=[metric])
    rt = DataEfficiencyRuntime(RunShape(4, SEQ, LAYERS, model_type="bert"), cl)
    assert rt.transform.kind == "seqreo"
    for real in (10, 30):                       # two micro-batches of 2 rows
        mask = torch.zeros(2, SEQ, dtype=torch.long)
        mask[:, :real] = 1
        batch = rt.transform_batch({"text": torch.ones(2, SEQ, dtype=torch.long),
                                    "padding_mask": mask}, 0)
        assert batch["text"].shape[1] == -(-real // 8) * 8
    assert rt.tokens_for_step(0) == 2 * 16 + 2 * 32


def test_state_round_trip_keeps_the_schedules():
    rt = DataEfficiencyRuntime(RunShape(GBS, SEQ, LAYERS), _seqtru(), _ltd())
    for it in range(5):
        rt.tokens_for_step(it)
    state = rt.state_dict(5)
    other = DataEfficiencyRuntime(RunShape(GBS, SEQ, LAYERS), _seqtru(), _ltd())
    other.load_state_dict(state)
    assert [other.tokens_for_step(i) for i in range(5, 12)] == \
        [rt.tokens_for_step(i) for i in range(5, 12)]


def test_sizing_a_run_in_tokens_leaves_the_schedules_where_they_were():
    rt = DataEfficiencyRuntime(RunShape(GBS, SEQ, LAYERS), _seqtru(), _ltd())
    before = rt.state_dict()
    assert rt.steps_for_tokens(50 * GBS * SEQ) > 50
    assert rt.state_dict() == before
