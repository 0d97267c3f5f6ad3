"""The tuner's trial runs: candidate grids, and one short pretraining run per
(start, duration), driven like the study's runs (same commands, folders, resume)."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Callable

from megatron.study import data as study_data
from megatron.study.commands import (DIFFICULTY_STEP, INDEX_OF, SEQ_PER_STEP, DataSpec, RunSpec,
                                     budget_tokens, nominal_steps)
from megatron.study.presets import Arm, Preset, with_hyper
from megatron.study.progress import Progress
from megatron.study.runner import BASE_SEED, execute_run

PERCENTILE_STARTS = (1, 2, 3, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100)
DURATIONS = tuple(round(0.1 * i, 1) for i in range(1, 11))


@dataclass(frozen=True)
class Technique:
    """What is tuned: the arm a trial runs and which Table 1 fractions it sets.

    Attributes:
        arm: ``CL_<metric>`` or ``random-LTD``.
        start_key / duration_key: the ``HyperParams`` fields (``d_s_seqlen`` ...).
        start_unit: ``tokens`` (a length) or ``percent`` (of the samples).
    """
    arm: Arm
    start_key: str
    duration_key: str
    start_unit: str


def technique(kind: str, metric: str | None) -> Technique:
    """``cl`` with a single curriculum metric, or ``ltd``."""
    if kind == "ltd":
        return Technique(Arm("random-LTD", (), True), "r_s", "t_r", "tokens")
    if metric in ("seqtru", "seqres"):
        return Technique(Arm(f"CL_{metric}", (metric,)), "d_s_seqlen", "t_c", "tokens")
    if metric in INDEX_OF:
        return Technique(Arm(f"CL_{metric}", (metric,)), "d_s_percentile", "t_c", "percent")
    raise ValueError(f"--metric {metric!r}: tune one of seqtru, seqres, {', '.join(INDEX_OF)}")


def start_candidates(tech: Technique, seq_length: int) -> list[int]:
    """Ascending starts: lengths in the pacing's steps up to the sequence length, or
    percentiles."""
    if tech.start_unit == "percent":
        return list(PERCENTILE_STARTS)
    step = SEQ_PER_STEP if tech.arm.random_ltd else DIFFICULTY_STEP
    return list(range(step, seq_length + 1, step))


# A trial evaluates (whole validation split) every ceil(steps / 8) steps and at its end:
# up to 8 points, and the stability rule needs a few of them to see a rise.
EVALUATIONS = 8
MIN_EVALUATIONS = 4


def trial_steps(preset: Preset, fraction: float) -> int:
    """Baseline steps of a trial of ``fraction`` of the preset's budget (a curriculum or
    random-LTD trial takes at least as many)."""
    return nominal_steps(preset, budget_tokens(preset, fraction))


def trial_interval(steps: int) -> int:
    return max(1, math.ceil(steps / EVALUATIONS))


def trial_evaluations(steps: int) -> int:
    """Whole-split evaluations of a trial of ``steps`` steps: every interval, and at the
    end."""
    return math.ceil(steps / trial_interval(steps))


def fraction_needed(preset: Preset, evaluations: int = MIN_EVALUATIONS) -> float:
    """The smallest ``--fraction`` (rounded up to two significant digits) whose trials
    evaluate at least ``evaluations`` times."""
    steps = next(n for n in range(1, 10 ** 9) if trial_evaluations(n) >= evaluations)
    per_step = preset.global_batch_size * preset.seq_length
    exact = ((steps - 1) * per_step + 1) / preset.train_tokens   # just over steps - 1
    digits = 1 - math.floor(math.log10(exact))
    fraction = math.ceil(exact * 10 ** digits) / 10 ** digits
    while trial_evaluations(trial_steps(preset, fraction)) < evaluations:
        fraction = round(fraction + 10 ** -digits, digits)
    return fraction


def trial_preset(preset: Preset, fraction: float) -> Preset:
    """The preset for trials of ``fraction`` of its budget: the schedules (LR, T_c, T_r)
    compress into the trial, evaluated ``trial_evaluations`` times."""
    interval = trial_interval(trial_steps(preset, fraction))
    return replace(preset, train_tokens=budget_tokens(preset, fraction), plan=(),
                   eval_interval=interval, evaluations=None,   # the trial's own interval
                   log_interval=min(preset.log_interval, interval))


def trial_runner(preset: Preset, tech: Technique, data: DataSpec, out_dir: str,
                 extra: tuple[str, ...], threads: int, progress: Progress,
                 seed: int = BASE_SEED) -> Callable[[float, float], list[float]]:
    """``fn(start, duration) -> validation perplexities`` running one trial (reused if it
    finished before). ``start`` is in tokens or percent, ``duration`` a fraction."""
    index_dir = os.path.join(out_dir, "index", f"s{seed}")
    study_data.build_index(preset, data, seed, index_dir, [tech.arm], progress.say)

    def run(start: float, duration: float) -> list[float]:
        value = start / preset.seq_length if tech.start_unit == "tokens" else start
        p = with_hyper(preset, **{tech.start_key: value, tech.duration_key: duration})
        label = f"{tech.arm.name}_start{start:g}_dur{duration:g}"
        record = execute_run(p, RunSpec(tech.arm, 1.0, seed, label=label), data,
                             os.path.join(out_dir, "trials"), index_dir, extra, threads,
                             progress)
        return [math.exp(min(50.0, point["loss"])) for point in record["curve"]]
    return run
