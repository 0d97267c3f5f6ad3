"""Difficulty windows (``percentile_window``): the sampler admits a band of percentiles,
static or with a scheduled high edge, alone or with other metrics; resume is exact;
the config takes DeepSpeed-shaped ``[lo, hi]`` pairs and the matching flags."""
import argparse

import numpy as np
import pytest
from curriculum_testlib import linear, memory_index, paced_sampler

from megatron.data_efficiency.config import config_from_dict
from megatron.data_efficiency.config_flags import add_curriculum_args, config_from_args
from megatron.data_efficiency.curriculum.scheduler import CurriculumScheduler, ScheduleConfig

RNG = np.random.default_rng(99)
VALUES = RNG.integers(0, 50, size=3000)          # many ties: the band cuts through them
N = len(VALUES)


def _rank(values: np.ndarray) -> np.ndarray:
    """Brute force: position of every sample in the (value, id) order."""
    rank = np.empty(len(values), dtype=np.int64)
    rank[np.lexsort((np.arange(len(values)), values))] = np.arange(len(values))
    return rank


def _band(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Boolean [N]: the samples between the lo and hi percentiles (DeepSpeed's
    ``(N // 100) * p`` arithmetic, all N at 100)."""
    n = len(values)
    end = n if hi == 100 else (n // 100) * hi
    r = _rank(values)
    return (r >= (n // 100) * lo) & (r < end)


def _static(lo, hi):
    return CurriculumScheduler(ScheduleConfig("fixed_discrete", hi, hi, difficulty=[hi]))


def _window_sampler(lo, sched, values=VALUES, gbs=64, extra=(), **kw):
    specs = [("ppl", memory_index(values), "percentile_window", sched, lo), *extra]
    return paced_sampler(specs, gbs, 4, 0, 1, seed=5, **kw)


@pytest.mark.parametrize("lo, hi", [(25, 75), (0, 50), (50, 100), (33, 34)])
def test_static_window_admits_exactly_the_band(lo, hi):
    band = _band(VALUES, lo, hi)
    s = _window_sampler(lo, _static(lo, hi))
    drawn = np.concatenate([s.next_global_batch() for _ in range(4 * N // 64)])
    assert band[drawn].all(), "an id outside the band was drawn"
    assert set(drawn.tolist()) == set(np.flatnonzero(band).tolist())   # every band id
    assert s.admitted_samples == band.sum() and s.num_clusters == 1


def test_scheduled_window_grows_its_high_edge_only():
    sched = linear(40, 80, 20, 10)                   # hi: 40, 50, ..., 80
    s = _window_sampler(20, sched)
    seen = set()
    for step in range(1, 30):
        batch = s.next_global_batch()
        hi = sched.difficulty_at(step)
        assert s.current_difficulties["ppl"] == hi
        band = _band(VALUES, 20, hi)
        assert band[batch].all(), f"step {step}: an id outside [20, {hi}]"
        assert s.admitted_samples == band.sum()
        seen.update(batch.tolist())
    assert not (_rank(VALUES)[list(seen)] < (N // 100) * 20).any()
    assert s.num_clusters == 5


def test_window_with_a_prefix_metric_admits_the_intersection():
    other = RNG.integers(0, 10, size=N)
    voc = ("voc", memory_index(other), "percentile", linear(30, 100, 10, 10))
    s = _window_sampler(10, _static(10, 60), extra=[voc], gbs=128)
    rank_voc = _rank(other)
    for step in range(1, 25):
        batch = s.next_global_batch()
        d = s.current_difficulties["voc"]
        ok = _band(VALUES, 10, 60) & (rank_voc < (N // 100) * d if d < 100 else True)
        assert ok[batch].all(), step
        assert s.admitted_samples == ok.sum(), step


def test_resume_draws_the_same_ids_and_a_changed_window_is_refused():
    sched = linear(40, 80, 12, 10)
    ref = _window_sampler(20, sched, buffer_size=64)
    stream = [ref.next_global_batch() for _ in range(20)]
    first = _window_sampler(20, sched, buffer_size=64)
    for _ in range(8):
        first.next_global_batch()
    state = first.state_dict()
    resumed = _window_sampler(20, sched, buffer_size=64)
    resumed.load_state_dict(state)
    for b in stream[8:]:
        np.testing.assert_array_equal(resumed.next_global_batch(), b)
    moved = _window_sampler(30, sched, buffer_size=64)
    with pytest.raises(ValueError, match="window"):
        moved.load_state_dict(state)


def test_window_holds_no_more_memory_than_a_prefix():
    """O(1) in the band: one cluster of ``buffer_size`` ids, nothing per sample."""
    s = _window_sampler(10, _static(10, 90), buffer_size=128)
    s.next_global_batch()
    assert s._streams.buf.shape[1] == 128 and s.num_clusters == 1


# -- config ---------------------------------------------------------------------------
def _json(metric):
    return {"enabled": True, "data_sampling": {"enabled": True, "curriculum_learning": {
        "enabled": True, "curriculum_metrics": {"ppl": metric}}}}


def test_json_static_and_scheduled_windows():
    static = config_from_dict(_json({"index_path": "I/ppl", "difficulty_type":
                                     "percentile_window", "min_difficulty": [25, 75],
                                     "max_difficulty": [25, 75]}))
    m = static.curriculum.metrics[0]
    assert (m.window_low, m.difficulty_type) == (25, "percentile_window")
    assert CurriculumScheduler(m.schedule).difficulty_at(1) == 75
    assert CurriculumScheduler(m.schedule).difficulty_at(10 ** 6) == 75
    paced = config_from_dict(_json({
        "index_path": "I/ppl", "difficulty_type": "percentile_window",
        "min_difficulty": [10, 50], "max_difficulty": [10, 90], "schedule_type": "fixed_linear",
        "schedule_config": {"total_curriculum_step": 4, "difficulty_step": 10}}))
    sched = CurriculumScheduler(paced.curriculum.metrics[0].schedule)
    assert [sched.difficulty_at(t) for t in (1, 2, 4, 9)] == [60, 70, 90, 90]


@pytest.mark.parametrize("lohi, match", [
    (([25, 75], [30, 75]), "low edges differ"),
    (([75, 25], [75, 25]), "0 <= lo < hi"),
    ((25, 75), r"\[lo, hi\] pair"),
    (([25, 75], [25, 60]), "0 <= lo < hi"),
])
def test_json_bad_windows_are_named(lohi, match):
    m = {"index_path": "I/ppl", "difficulty_type": "percentile_window",
         "min_difficulty": lohi[0], "max_difficulty": lohi[1]}
    with pytest.raises(ValueError, match=match):
        config_from_dict(_json(m))


def _args(*argv):
    p = argparse.ArgumentParser()
    add_curriculum_args(p)
    a = p.parse_args(list(argv))
    a.seq_length, a.num_layers, a.seed = 64, 4, 1
    a.random_ltd = False
    for k in ("random_ltd_min_seqlen", "random_ltd_total_steps", "random_ltd_layer_ids",
              "random_ltd_layer_num", "random_ltd_seq_per_step"):
        setattr(a, k, None)
    return a


def test_flags_give_the_same_window_as_json():
    a = _args("--data-efficiency-curriculum-learning", "--curriculum-metric", "seqtru", "ppl",
              "--curriculum-index-path", "I/ppl", "--curriculum-difficulty-type", "value",
              "percentile_window", "--curriculum-window-low", "25",
              "--curriculum-min-difficulty", "8", "75", "--curriculum-max-difficulty", "64",
              "75", "--curriculum-schedule-type", "fixed_linear",
              "--curriculum-total-steps", "4", "--curriculum-difficulty-step", "8", "1")
    try:
        cfg = config_from_args(a)
    except AttributeError as err:          # a random-LTD flag this helper does not set
        pytest.fail(f"test helper lacks a flag: {err}")
    seqtru, ppl = cfg.curriculum.metrics
    assert (seqtru.kind, seqtru.window_low) == ("seqtru", None)
    assert (ppl.difficulty_type, ppl.window_low) == ("percentile_window", 25)
    assert ppl.schedule.max_difficulty == 75


def test_static_window_from_flags_needs_no_schedule():
    a = _args("--data-efficiency-curriculum-learning", "--curriculum-metric", "ppl",
              "--curriculum-index-path", "I/ppl", "--curriculum-difficulty-type",
              "percentile_window", "--curriculum-window-low", "25",
              "--curriculum-min-difficulty", "75", "--curriculum-max-difficulty", "75")
    ppl, = config_from_args(a).curriculum.metrics
    assert (ppl.window_low, ppl.schedule.schedule_type) == (25, "fixed_discrete")
    assert CurriculumScheduler(ppl.schedule).difficulty_at(7) == 75


def test_window_low_flag_without_a_window_is_refused():
    a = _args("--data-efficiency-curriculum-learning", "--curriculum-metric", "voc",
              "--curriculum-index-path", "I/voc", "--curriculum-window-low", "25",
              "--curriculum-min-difficulty", "1", "--curriculum-max-difficulty", "100",
              "--curriculum-total-steps", "4")
    with pytest.raises(ValueError, match="window-low"):
        config_from_args(a)
