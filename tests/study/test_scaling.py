"""The scaling study (issue 24): its preset held to the pre-registration, the same-steps
control's batch, and the analysis on synthetic metrics files."""
from __future__ import annotations

import math
import os

import pytest

from megatron.study import scaling
from megatron.study.commands import budget_tokens, eval_interval, nominal_steps
from megatron.study.presets import COMPOSED, SAME_STEPS, get_preset

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREREGISTRATION = os.path.join(ROOT, "docs", "preregistration", "cpu-scaling.md")


def test_preregistration_holds_the_presets_settings_and_runs():
    """The document's two tables are the preset's, generated from it: a preset that
    drifts from what was registered fails here."""
    doc = open(PREREGISTRATION).read()
    preset = get_preset("cpu-scaling")
    assert scaling.settings_table(preset) in doc
    assert scaling.plan_table(preset) in doc
    assert preset.seeds == 3 and preset.levels == (1.0, 2.0, 4.0)
    assert "--split 95,5,0" in doc and preset.split == "95,5,0"
    assert f"margin {scaling.MARGIN:.2f}" in doc.replace("**", "")


@pytest.mark.parametrize("name", ["cpu-scaling", "scaling-smoke"])
def test_scaling_plan_runs_every_level_once_with_ten_evaluations(name):
    preset = get_preset(name)
    plan = preset.plan
    assert len(plan) == len(set(plan))
    for level in preset.levels:
        for pair in (("baseline", level), (COMPOSED, level), (SAME_STEPS.name, level),
                     ("baseline", level / 2), (COMPOSED, level / 2)):
            assert pair in plan, pair
    assert [f for _, f in plan] == sorted((f for _, f in plan), reverse=True)
    for arm, f in plan:   # every run evaluates at least `evaluations` times
        every = eval_interval(preset, nominal_steps(preset, budget_tokens(preset, f)))
        assert math.ceil(scaling.planned_steps(preset, arm, f) / every) >= preset.evaluations


@pytest.mark.parametrize("name", ["cpu-scaling", "scaling-smoke"])
def test_same_steps_batch_is_the_preregistered_rule(name):
    """floor(global batch x baseline steps / composed steps), from the step planner, at
    every level: the control takes at least the composed arm's steps at the same tokens."""
    preset = get_preset(name)
    for level in preset.levels:
        base = scaling.planned_steps(preset, "baseline", level)
        composed = scaling.planned_steps(preset, COMPOSED, level)
        control = scaling.planned_steps(preset, SAME_STEPS.name, level)
        assert preset.same_steps_batch == preset.global_batch_size * base // composed
        assert composed <= control
