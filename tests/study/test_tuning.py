"""The low-cost tuner's search (paper section 3.3) against synthetic objectives."""
from __future__ import annotations

import math

from megatron.study.tuning import (Trial, is_stable, largest_passing, max_trials, separated,
                                  smallest_passing, tune)


def test_stability_rule():
    assert is_stable([100, 80, 60, 70, 50])        # 70 <= 1.3 x 60
    assert not is_stable([100, 80, 60, 79, 50])    # 79 > 1.3 x 60
    assert not is_stable([100, math.nan])
    assert not is_stable([])
    assert is_stable([100, 80, 60, 79], ratio=1.5)


def test_binary_searches_find_the_boundary_in_log_steps():
    calls = []
    grid = list(range(8, 2049, 8))

    def ok(v):
        calls.append(v)
        return v >= 123
    assert smallest_passing(grid, ok) == 128
    assert len(calls) <= 9
    assert largest_passing([0.1 * i for i in range(1, 11)], lambda t: t <= 0.55) == \
        0.1 * 5
    assert smallest_passing(grid, lambda v: False) is None
    assert largest_passing([1, 2, 3], lambda v: True) == 3


def _synthetic(best_start: float, best_duration: float):
    """A validation curve that falls smoothly, or spikes 1.5x mid-way when the start is
    below ``best_start`` or the duration above ``best_duration``."""
    def curve(start, duration):
        ppl = [200.0 * 0.85 ** i for i in range(8)]
        if start < best_start or duration > best_duration:
            ppl[4] = ppl[3] * 1.5
        return ppl
    return curve


def test_tune_finds_the_known_optimum():
    starts = list(range(8, 257, 8))
    durations = [round(0.05 * i, 2) for i in range(1, 21)]
    result = tune(_synthetic(37, 0.55), starts, durations, default_duration=0.4)
    assert result.start == 40 and result.duration == 0.55
    # smallest start over 32 candidates, largest duration over 20: binary-search counts
    assert len(result.trials) <= 6 + 5 + 1
    assert all(t.stable == (t.start >= 37 and t.duration <= 0.55) for t in result.trials)
    assert result.to_dict()["trials"][0]["perplexities"]


def test_tune_reports_when_nothing_is_stable():
    result = tune(_synthetic(10_000, 1.0), [8, 16, 32], [0.5, 1.0], default_duration=0.5)
    assert result.start is None and result.duration is None and len(result.trials) == 2


def test_trials_at_most_the_bound():
    """``max_trials`` bounds the runs of any search (the tuner's ``[trial N of at most M]``)."""
    import random
    rng = random.Random(0)
    for _ in range(200):
        starts = list(range(rng.randint(1, 40)))
        durations = sorted({rng.randint(1, 30) / 10 for _ in range(rng.randint(1, 12))})
        default = rng.choice(durations + [0.45])
        s_cut, d_cut = rng.choice(starts + [99]), rng.random() * 3

        def curve(start, duration):
            return [3.0, 2.0, 9.0] if start < s_cut or duration > d_cut else [3.0, 2.0, 1.0]
        result = tune(curve, starts, durations, default)
        assert len(result.trials) <= max_trials(len(starts), len(set(durations) | {default}))
    assert max_trials(32, 20) == 6 + 5


def test_trials_that_all_agree_carry_no_signal():
    same = [Trial(s, 0.4, [90.0, 80.0, 70.0, 65.0], True) for s in (8, 16, 24)]
    assert not separated(same)
    assert separated(same[:1])                       # one trial: nothing to compare
    differ = same[:2] + [Trial(24, 0.4, [90.0, 80.0, 70.0, 65.1], True)]
    assert separated(differ)
    assert separated([same[0], Trial(8, 0.5, [90.0, 80.0, 70.0], True)])
