"""The scaling study (issue 24): its preset held to the pre-registration, the same-steps
control's batch, and the analysis on synthetic metrics files."""
from __future__ import annotations

import json
import math
import os

import numpy as np
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


# --- the analysis, on synthetic metrics files ---------------------------------------------

def _metrics_file(path, points, steps):
    """A finished run's metrics file as training writes it: start, one ``eval`` line per
    (tokens, loss) point, end."""
    from megatron.metrics_file import MetricsWriter
    w = MetricsWriter(path)
    w.write("start", iteration=0, consumed_samples=0, consumed_tokens=0, resumed=False,
            train_iters=steps, config={})
    for i, (tokens, loss) in enumerate(points, 1):
        it = i * steps // len(points)
        w.write("step", iteration=it, consumed_samples=it, consumed_tokens=tokens,
                iteration_time_s=0.1, interval=1, losses={"lm loss": loss})
        w.write("eval", split="validation", iteration=it, consumed_samples=it,
                consumed_tokens=tokens, values={"lm loss": loss})
    w.write("end", iteration=steps, consumed_samples=steps, consumed_tokens=points[-1][0],
            exit="finished")
    w.close()


def _linear(budget, final, reach=None, target=5.0, start=10.0):
    """Ten evaluations of a curve falling linearly from ``start``: through ``target`` at
    ``reach`` tokens (linear interpolation recovers it exactly), or to ``final`` at the
    budget."""
    slope = (start - target) / reach if reach else (start - final) / budget
    return [(budget * i // 10, start - slope * budget * i / 10) for i in range(1, 11)]


def _study(tmp_path, fractions, control_final=4.75, half_final=5.02, missing=()):
    """Records of a synthetic cpu-scaling study read back from metrics files: at every
    budget the baseline ends at loss 5.0; the composed arm's run at level L reaches 5.0
    at ``fractions[L][seed] x L`` (None: never, ending at 5.5), at 0.5B it ends at 4.9;
    the composed arm at L/2 ends at ``half_final``; the control at ``control_final``."""
    from megatron.study.results import run_record
    preset = get_preset("cpu-scaling")
    records = []
    for arm, f in preset.plan:
        for k, seed in enumerate((1234, 1235, 1236)):
            budget = budget_tokens(preset, f)
            if arm == "baseline":
                points = _linear(budget, 5.0)
            elif arm == SAME_STEPS.name:
                points = _linear(budget, control_final)
            elif f in fractions and fractions[f][k] is not None:
                points = _linear(budget, None, reach=fractions[f][k] * budget)
            elif f in fractions:
                points = _linear(budget, 5.5)
            else:   # 0.5B: only the composed arm's half-data run of level B
                points = _linear(budget, half_final)
            if (arm, f) in missing:
                continue
            path = str(tmp_path / f"{arm}_{f}_{seed}.jsonl")
            _metrics_file(path, points, steps=100)
            records.append({"arm": arm, "budget_fraction": f, "seed": seed,
                            **run_record(path)})
    return preset, records


def test_tokens_to_reach_interpolates_and_never_extrapolates():
    curve = [{"tokens": t, "loss": v} for t, v in [(300, 3.5), (100, 5.0), (200, 4.0)]]
    assert scaling.tokens_to_reach(curve, 3.75) == pytest.approx(250.0)
    assert scaling.tokens_to_reach(curve, 4.0) == pytest.approx(200.0)
    assert scaling.tokens_to_reach(curve, 6.0) == 100.0       # already there at the first
    assert scaling.tokens_to_reach(curve, 3.4) is None        # never reached: no guess
    bumpy = [{"tokens": 100, "loss": 5.0}, {"tokens": 200, "loss": 3.0},
             {"tokens": 300, "loss": 4.5}, {"tokens": 400, "loss": 2.0}]
    assert scaling.tokens_to_reach(bumpy, 4.0) == pytest.approx(150.0)   # the first crossing


def test_analysis_per_level_with_the_seed_spread(tmp_path):
    fr = {1.0: [0.48, 0.50, 0.52], 2.0: [0.45, 0.50, 0.55], 4.0: [0.47, 0.50, 0.53]}
    preset, records = _study(tmp_path, fr)
    a = scaling.analyse(records, preset)
    assert [r["name"] for r in a["levels"]] == ["B", "2B", "4B"] and not a["missing_levels"]
    for row in a["levels"]:
        want = fr[row["level"]]
        got = row["composed"]
        assert got["reached"] == got["seeds"] == 3
        assert [t / row["budget_tokens"] for t in got["tokens"].values()] == \
            pytest.approx(want)
        assert got["fraction_mean"] == pytest.approx(0.5)
        assert got["fraction_sd"] == pytest.approx(float(np.std(want, ddof=1)))
        # the control ends at 4.75: reaches 5.0 at 5 / 5.25 of its budget
        assert row["control"]["fraction_mean"] == pytest.approx(5 / 5.25)
        s = row["same_steps"]
        b, c, comp = (s["loss"][k]["mean"] for k in ("baseline", "control", "composed"))
        assert (b, c) == pytest.approx((5.0, 4.75))
        assert s["steps_share"] == pytest.approx((b - c) / (b - comp))
        assert s["steps_share"] + s["order_share"] == pytest.approx(1.0)
        assert s["steps"] == {"baseline": 100, "control": 100, "composed": 100}
    half = a["levels"][0]["half_data"]          # the composed arm at 0.5B: 5.02 against 5.00
    assert half["mean"] == pytest.approx(0.02) and half["equal"] is True
    ratios = {r["name"]: r["mean"] for r in a["equal_data"]}
    assert set(ratios) == {"0.5B", "B", "2B", "4B"}
    assert ratios["0.5B"] == pytest.approx(5.02 / 5.0)
    assert a["trend"]["verdict"] == "holds" and a["trend"]["delta"] == pytest.approx(0.0)


@pytest.mark.parametrize("at_4b, word", [
    ([0.48, 0.50, 0.52], "holds"),
    ([0.28, 0.30, 0.32], "grows"),
    ([0.78, 0.80, 0.82], "shrinks"),
    ([0.40, 0.90, 0.95], "unresolved"),     # a change beyond the margin, inside the noise
    ([0.12, 0.15, 0.85], "unresolved"),     # the same, downwards
    ([0.50, None, 0.50], "shrinks"),        # one seed never reaches the baseline at 4B
])
def test_verdict_shrinks_holds_grows(tmp_path, at_4b, word):
    fr = {1.0: [0.48, 0.50, 0.52], 2.0: [0.5, 0.5, 0.5], 4.0: at_4b}
    preset, records = _study(tmp_path, fr)
    a = scaling.analyse(records, preset)
    assert a["trend"]["verdict"] == word, a["trend"]
    last = a["levels"][-1]["composed"]
    if None in at_4b:
        assert last["reached"] == 2 and last["fraction_mean"] is None
        assert last["tokens"][1235] is None                   # reported, not extrapolated
        from megatron.study.scaling_report import report_markdown
        assert "not reached (1 of 3 seeds)" in report_markdown(a, "t")


def test_verdict_without_a_gain_anywhere():
    never = {"tokens": {1: None}, "seeds": 1, "reached": 0, "fraction_mean": None,
             "fraction_sd": None}
    barely = {"tokens": {1: 95.0}, "seeds": 1, "reached": 1, "fraction_mean": 0.95,
              "fraction_sd": 0.0}
    assert scaling.verdict(never, never)["verdict"] == "no gain"
    assert scaling.verdict(barely, never)["verdict"] == "no gain"   # within the margin at B
    assert scaling.verdict(never, {**barely, "fraction_mean": 0.6})["verdict"] == "grows"


def test_report_json_markdown_and_one_plot_per_question(tmp_path):
    from megatron.study import scaling_report
    fr = {1.0: [0.48, 0.50, 0.52], 2.0: [0.45, 0.50, 0.55], 4.0: [0.6, None, 0.7]}
    preset, records = _study(tmp_path, fr, missing={(SAME_STEPS.name, 2.0)})
    out = tmp_path / "out"
    out.mkdir()
    paths = scaling_report.write_report(records, preset, str(out), "Scaling study")
    names = sorted(os.path.basename(p) for p in paths)
    assert names == ["scaling.json", "scaling.md", "scaling_curves.png",
                     "scaling_data_to_quality.png", "scaling_same_steps.png"]
    for p in paths:
        if p.endswith(".png"):
            assert open(p, "rb").read(4) == b"\x89PNG"
    data = json.load(open(out / "scaling.json"))
    assert data["trend"]["verdict"] == "shrinks"
    assert "control" not in data["levels"][1]                 # its run is missing at 2B
    md = open(out / "scaling.md").read()
    assert "**The gain shrinks** from B to 4B" in md
    assert "| 4B | 1,310,720 | 5.0000 ± 0.0000 | not reached (1 of 3 seeds) | " \
           "0.600 / not reached / 0.700 |" in md
    assert "| B | 100 / 100 / 100 | 5.0000 ± 0.0000 | 4.7500 ± 0.0000 |" in md
    assert "| B | +0.0200 ± 0.0000 | yes |" in md                # the half-data comparison


def test_tuner_trials_of_a_scaling_preset_keep_their_own_evaluation_interval():
    from megatron.study.commands import DataSpec, RunSpec, pretrain_command
    from megatron.study.trials import trial_interval, trial_preset, trial_steps
    preset = get_preset("cpu-scaling")
    trial = trial_preset(preset, 0.25)
    cmd = pretrain_command(trial, RunSpec(preset.arms["baseline"], 1.0, 1), DataSpec(
        "d", (), "c"), "r", "t", "i")
    every = cmd[cmd.index("--eval-interval") + 1]
    # 40 steps: every 5 (up to 8 evaluations), not the preset's 40 // 10
    assert every == str(trial_interval(trial_steps(preset, 0.25))) == "5"
