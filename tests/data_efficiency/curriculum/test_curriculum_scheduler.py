"""Pacing functions against DESIGN section 3's reference values and DeepSpeed's rules."""
import math

import pytest

from megatron.data_efficiency.curriculum.scheduler import CurriculumScheduler, ScheduleConfig


def sched(kind, d_min, d_max, **kw):
    return CurriculumScheduler(ScheduleConfig(kind, d_min, d_max, **kw))


def test_fixed_linear_seqtru_reference_values():
    s = sched("fixed_linear", 80, 2048, total_curriculum_step=110000, difficulty_step=8)
    assert [s.get_difficulty(t) for t in (0, 1000, 10000, 55000, 109999, 110000, 200000)] == \
        [80, 96, 256, 1064, 2040, 2048, 2048]


def test_fixed_root_voc_reference_values():
    s = sched("fixed_root", 1, 100, total_curriculum_step=110000, difficulty_step=1,
              root_degree=2)
    assert [s.get_difficulty(t) for t in (100, 10000, 55000, 100000)] == [3, 30, 71, 95]


def test_fixed_linear_issue_table_steps_are_one_based():
    s = sched("fixed_linear", 2, 10, total_curriculum_step=8, difficulty_step=2)
    assert [s.difficulty_at(t) for t in range(1, 11)] == [2, 4, 4, 6, 6, 8, 8, 10, 10, 10]


def test_min_not_multiple_of_step_is_raised_to_next_multiple():
    s = sched("fixed_linear", 5, 100, total_curriculum_step=1000, difficulty_step=8)
    assert s.get_difficulty(1) == 8          # floor(5.095) = 5 -> 0 -> raised to 8
    assert s.get_difficulty(0) == 8
    assert s.get_difficulty(1000) == 96      # 100 rounded down to a multiple of 8
    assert sched("fixed_linear", 5, 6, total_curriculum_step=10,
                 difficulty_step=8).get_difficulty(1) == 6   # never above d_max


def test_fixed_discrete_and_latch():
    s = sched("fixed_discrete", 1, 10, difficulty=[1, 2, 3], max_step=[5, 10])
    assert [s.get_difficulty(t) for t in (1, 5, 6, 10, 11, 10**6)] == [1, 1, 2, 2, 3, 3]
    down = sched("fixed_discrete", 1, 10, difficulty=[4, 10, 2], max_step=[2, 4])
    assert [down.difficulty_at(t) for t in range(1, 8)] == [4, 4, 10, 10, 10, 10, 10]
    assert [down.difficulty_at(t) for t in (7, 3, 1)] == [10, 10, 4]
    above = sched("fixed_discrete", 1, 10, difficulty=[4, 12, 2], max_step=[2, 4])
    # as DeepSpeed: a level above d_max is used as given (not capped), then latched
    assert [above.difficulty_at(t) for t in range(1, 7)] == [4, 4, 12, 12, 12, 12]
    assert [above.difficulty_at(t) for t in (7, 3, 1)] == [12, 12, 4]


def _three_isqrt(step: int) -> int:
    return 3 * math.isqrt(step)


def test_custom_function_by_import_path():
    s = sched("custom", 1, 5, custom_function="math:isqrt")
    assert [s.difficulty_at(t) for t in (1, 4, 9, 16, 36, 1)] == [1, 2, 3, 4, 5, 1]
    # as DeepSpeed: a custom value is not capped at d_max; the first one at or above it
    # (3 * isqrt(t) reaches 6 > 5 at t = 4) is latched
    jump = sched("custom", 1, 5, custom_function="tests.data_efficiency.curriculum."
                 "test_curriculum_scheduler:_three_isqrt")
    assert [jump.difficulty_at(t) for t in (1, 3, 4, 9, 100)] == [3, 3, 6, 6, 6]
    bad = sched("custom", 1, 5, custom_function="os.path:join")
    with pytest.raises((ValueError, TypeError)):
        bad.difficulty_at(3)
    with pytest.raises(ValueError, match="cannot be loaded"):
        sched("custom", 1, 5, custom_function="math:no_such_function")


def test_custom_latch_is_pure_in_the_step():
    """DeepSpeed keeps d_max once reached, even if the custom function goes down again;
    here that is a function of the step alone: any call order gives the same values."""
    levels = {1: 1, 2: 3, 3: 5, 4: 2, 5: 1}
    cfg = ScheduleConfig("custom", 1, 5, custom_function="math:isqrt")
    order = [CurriculumScheduler(cfg, custom_fn=lambda t: levels[min(t, 5)]).difficulty_at(t)
             for t in range(1, 7)]
    assert order == [1, 3, 5, 5, 5, 5]
    backwards = CurriculumScheduler(cfg, custom_fn=lambda t: levels[min(t, 5)])
    assert [backwards.difficulty_at(t) for t in (6, 2, 4, 1)] == [5, 3, 5, 1]
    assert backwards.get_difficulty(4) == 2                 # the formula itself, no latch


@pytest.mark.parametrize("kw, msg", [
    (dict(schedule_type="fixed_linear", total_curriculum_step=0), "total_curriculum_step"),
    (dict(schedule_type="fixed_root", total_curriculum_step=10), "root_degree"),
    (dict(schedule_type="fixed_discrete", difficulty=[1, 2], max_step=[3, 4]), "len"),
    (dict(schedule_type="warp", total_curriculum_step=10), "schedule_type"),
])
def test_bad_settings_are_named(kw, msg):
    with pytest.raises(ValueError, match=msg):
        CurriculumScheduler(ScheduleConfig(min_difficulty=1, max_difficulty=9, **kw))


def test_linear_pacing_keeps_deepspeeds_float_arithmetic():
    """DeepSpeed computes floor(t / T * (d_max - d_min) + d_min) in floats; at t = 9 of
    T = 33 (1 -> 100) that product is 26.99999..., so DeepSpeed's difficulty is 27, not the
    exact 28. Both the curriculum and random-LTD's MSLG (one pacing formula) match DeepSpeed."""
    from megatron.data_efficiency.random_ltd import mslg_kept_length
    s = sched("fixed_linear", 1, 100, total_curriculum_step=33, difficulty_step=1)
    assert [s.difficulty_at(t) for t in (9, 18)] == [27, 54]
    assert mslg_kept_length(9, 1, 100, 33, 1) == 27
