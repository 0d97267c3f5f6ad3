"""One curriculum clock: the step planner is the only thing that evaluates a pacing
function, and the curriculum sampler draws every global batch from the plan's
difficulties, so the samples a step trains on are the plan's by construction (no check
of sample ids per micro-batch is needed)."""
from __future__ import annotations

import numpy as np
import pytest

from megatron.data_efficiency.analyzer.index_io import MetricIndex, write_metric_index
from megatron.data_efficiency.config import config_from_dict
from megatron.data_efficiency.curriculum import sampler as sampler_module
from megatron.data_efficiency.curriculum.clusters import prefix_length
from megatron.data_efficiency.curriculum.scheduler import CurriculumScheduler
from megatron.data_efficiency.runtime import DataEfficiencyRuntime, Parallelism
from megatron.data_efficiency.step_plan import RunShape, StepPlanner

N, GBS, MBS, STEPS = 2000, 16, 2, 40
SCHEDULES = {   # voc (percentile) and seqlen (value) pacings of a property run each
    "root": ({"schedule_type": "fixed_root", "schedule_config": {
        "total_curriculum_step": 30, "difficulty_step": 1, "root_degree": 2}}, 5),
    "linear": ({"schedule_type": "fixed_linear", "schedule_config": {
        "total_curriculum_step": 25, "difficulty_step": 5}}, 10),
    "discrete": ({"schedule_type": "fixed_discrete", "schedule_config": {
        "difficulty": [10, 35, 70, 100], "max_step": [4, 11, 19]}}, 10),
}


def _planner(tmp_path, schedule: str, seed: int) -> StepPlanner:
    """A planner over two index metrics (voc by percentile, seqlen by value) plus seqtru,
    with their indexes written under ``tmp_path``."""
    rng = np.random.default_rng(seed)
    for name, values in (("voc", rng.random(N) * 9), ("seqlen", rng.integers(1, 64, N))):
        write_metric_index(str(tmp_path / name), name, values, "fp")
    pacing, d_min = SCHEDULES[schedule]
    metrics = {
        "voc": {"index_path": str(tmp_path / "voc"), "difficulty_type": "percentile",
                "min_difficulty": d_min, "max_difficulty": 100, **pacing},
        "seqlen": {"index_path": str(tmp_path / "seqlen"), "difficulty_type": "value",
                   "min_difficulty": 16, "max_difficulty": 64, "schedule_type": "fixed_linear",
                   "schedule_config": {"total_curriculum_step": 20, "difficulty_step": 8}},
        "seqtru": {"min_difficulty": 8, "max_difficulty": 32, "schedule_type": "fixed_linear",
                   "schedule_config": {"total_curriculum_step": 10, "difficulty_step": 8}}}
    config = config_from_dict({"enabled": True, "seed": seed, "data_sampling": {
        "enabled": True, "curriculum_learning": {"enabled": True,
                                                 "curriculum_metrics": metrics}}})
    return StepPlanner(config, RunShape(GBS, 32, 2, seed=seed, num_microbatches=4))


def _sampler(planner, dp_rank=0, dp_size=2):
    runtime = DataEfficiencyRuntime(planner, Parallelism(dp_rank, dp_size))
    return runtime.train_batch_sampler([None] * N, MBS, 0)


def test_the_sampler_evaluates_no_pacing_of_its_own(tmp_path):
    """No scheduler, pacing formula or schedule config lives in the sampler: its one
    source of difficulties is the run's planner."""
    names = vars(sampler_module)
    assert not {"CurriculumScheduler", "paced_value", "ScheduleConfig"} & set(names)
    planner = _planner(tmp_path, "root", 3)
    sampler = _sampler(planner)
    assert sampler.difficulties.__self__ is planner
    seen, todo = set(), [sampler]
    while todo:   # every object the sampler holds, its planner excluded
        obj = todo.pop()
        if id(obj) in seen or obj is planner or isinstance(obj, np.ndarray):
            continue
        seen.add(id(obj))
        assert not isinstance(obj, CurriculumScheduler), obj
        if isinstance(obj, dict):
            todo += list(obj.values())
        elif isinstance(obj, (list, tuple)):
            todo += list(obj)
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            todo += list(vars(obj).values())


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("seed", [1, 2])
def test_every_step_draws_from_the_plans_difficulties(tmp_path, schedule, seed):
    """Property over a whole schedule: the sampler's thresholds at step k are the plan of
    iteration k - 1, every id it draws is admitted by them, and it admits exactly what
    they admit."""
    planner = _planner(tmp_path, schedule, seed)
    sampler = _sampler(planner)
    indexes = {m: MetricIndex.open(str(tmp_path / m)) for m in ("voc", "seqlen")}
    rank = {m: np.argsort(idx.sorted_samples) for m, idx in indexes.items()}
    for iteration in range(STEPS):
        batch = sampler.next_global_batch()
        plan = planner.plan(iteration)
        assert sampler.step == plan.curriculum_step
        assert sampler.current_difficulties == {m: plan.difficulties[m] for m in indexes}
        ends = {m: prefix_length(idx, t, plan.difficulties[m], 100)
                for (m, idx), t in zip(indexes.items(), ("percentile", "value"))}
        admitted = np.logical_and.reduce([rank[m] < ends[m] for m in indexes])
        assert admitted[batch].all(), iteration
        assert sampler.admitted_samples == admitted.sum(), iteration


def test_the_ids_of_a_step_follow_from_the_plans_difficulties(tmp_path):
    """Two samplers fed the same difficulties draw the same ids, whatever computed them;
    fed another plan's (one step later), they draw others."""
    planner = _planner(tmp_path, "linear", 4)
    live = _sampler(planner)
    recorded = {it: dict(planner.plan(it).difficulties) for it in range(STEPS)}
    replay = _sampler(planner)
    replay.difficulties = recorded.__getitem__
    ahead = _sampler(planner)
    ahead.difficulties = lambda it: planner.difficulties(it + 1)
    differ = 0
    for _ in range(STEPS):
        a, b, c = live.next_global_batch(), replay.next_global_batch(), ahead.next_global_batch()
        np.testing.assert_array_equal(a, b)
        differ += not np.array_equal(a, c)
    assert differ > 0
