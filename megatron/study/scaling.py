"""The scaling study's analysis (issue 24), as pre-registered in
``docs/preregistration/cpu-scaling.md``: does the composed arm's gain shrink, hold or grow
as training gets longer?

Everything is computed from the runs' validation curves (``results.run_record``: each
run's metrics file, never its log). The deciding number, per budget level ``L`` and seed:
the tokens the composed arm's run at ``L`` needs to reach the final validation loss of the
baseline's run at ``L`` (same seed), linearly interpolated between the two evaluations
that straddle it, as a fraction of ``L``. A curve that never gets there is reported as not
reaching it, never extrapolated. The trend compares that fraction at the largest level
with the smallest (``verdict``). Also reported: the loss ratio at equal data, the paper's
half-data comparison, and the same-steps control's share of the gain.

The pre-registration's two tables (``settings_table``, ``plan_table``) are generated here
from the preset, so a test can hold the document to the preset."""
from __future__ import annotations

import json
import math
import os
import statistics

from megatron.study.commands import (DataSpec, RunSpec, batch_sizes, budget_tokens,
                                     eval_interval, nominal_steps, pretrain_command)
from megatron.study.presets import COMPOSED, SAME_STEPS, Preset

MARGIN = 0.10        # the data fraction's equivalence margin (of the budget)
HALF_DATA_MARGIN = 0.05   # validation loss (nats): "equal" at half the data
BASELINE, CONTROL = "baseline", SAME_STEPS.name


def level_name(level: float) -> str:
    """``B``, ``2B``, ``0.5B``: a budget as a multiple of the preset's 100%."""
    return "B" if level == 1 else f"{level:g}B"


# --- the pre-registration's tables ------------------------------------------------------

def planned_steps(preset: Preset, arm: str, fraction: float) -> int:
    """The optimizer steps a run will take, from its own command line through the step
    planner training uses (curriculum and random-LTD steps consume fewer tokens)."""
    from megatron.arguments import run_config
    from megatron.run_plan import plan_run
    data = DataSpec("unused", ("--tokenizer-type", "NullTokenizer", "--vocab-size",
                               str(preset.vocab_size)), "unused")
    cmd = pretrain_command(preset, RunSpec(preset.arms[arm], fraction, 0), data, "run", "tb",
                           "index")
    return plan_run(run_config(cmd[1:])).train_iters


def settings_table(preset: Preset) -> str:
    """The preset's settings as a markdown table."""
    p = preset
    rows = [("model", f"{p.model.upper()}, {p.num_layers} layers, hidden {p.hidden_size}, "
                      f"{p.num_attention_heads} heads, sequence {p.seq_length}, "
                      f"flags {' '.join(p.extra)}"),
            ("batch", f"micro {p.micro_batch_size}, global {p.global_batch_size}; the "
                      f"same-steps control {p.same_steps_batch}"),
            ("budget B", f"{p.train_tokens:,} tokens ({nominal_steps(p, p.train_tokens)} "
                         "baseline steps)"),
            ("levels", ", ".join(level_name(f) for f in p.levels)),
            ("learning rate", f"{p.lr:g} to {p.min_lr:g}, cosine over each run's tokens, "
                              f"warmup {int(p.train_tokens * p.warmup_fraction):,} tokens "
                              "at every budget"),
            ("Table 1", f"d_s {p.hyper.d_s_seqlen:g} of the sequence / easiest "
                        f"{p.hyper.d_s_percentile:g}%, T_c {p.hyper.t_c:g}, r_s "
                        f"{p.hyper.r_s:g} of the sequence, T_r {p.hyper.t_r:g}"),
            ("data", f"{p.corpus_bytes:,} bytes of the default corpus, SentencePiece "
                     f"vocabulary {p.vocab_size:,}, split {p.split}"),
            ("evaluation", f"the whole validation split, every (baseline steps at the "
                           f"run's budget) // {p.evaluations} steps and at the end"),
            ("seeds", ", ".join(str(1234 + i) for i in range(p.seeds)))]
    return "\n".join(["| setting | value |", "|---|---|",
                      *(f"| {k} | {v} |" for k, v in rows)]) + "\n"


def plan_table(preset: Preset) -> str:
    """Every run of the preset (per seed): arm, budget, tokens, batch, planned steps,
    evaluation interval and evaluations."""
    lines = ["| arm | budget | tokens | global batch | steps | evaluation every | "
             "evaluations |", "|---|---|---|---|---|---|---|"]
    for arm, f in preset.plan:
        tokens = budget_tokens(preset, f)
        steps = planned_steps(preset, arm, f)
        every = eval_interval(preset, nominal_steps(preset, tokens))
        evals = math.ceil(steps / every)
        lines.append(f"| {arm} | {level_name(f)} | {tokens:,} | "
                     f"{batch_sizes(preset, preset.arms[arm])[1]} | {steps} | {every} | "
                     f"{evals} |")
    return "\n".join(lines) + "\n"


# --- the analysis -------------------------------------------------------------------------

def tokens_to_reach(curve: list[dict], target: float) -> float | None:
    """Consumed tokens at which a validation curve first reaches ``target``: linear
    interpolation between the two evaluations that straddle it; the first evaluation's
    tokens if it is already there; None if no evaluation reaches it (never extrapolated).

    Args:
        curve: ``[{"tokens", "loss"}, ...]`` (``results.run_record``'s curve).
    """
    points = sorted((p["tokens"], p["loss"]) for p in curve)
    for i, (tokens, loss) in enumerate(points):
        if loss <= target:
            if i == 0:
                return float(tokens)
            t0, l0 = points[i - 1]
            return t0 + (l0 - target) / (l0 - loss) * (tokens - t0)
    return None


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def by_run(records: list[dict]) -> dict[tuple[str, float], dict[int, dict]]:
    """(arm, budget fraction) -> seed -> record."""
    runs: dict[tuple[str, float], dict[int, dict]] = {}
    for r in records:
        runs.setdefault((r["arm"], round(float(r["budget_fraction"]), 6)), {})[r["seed"]] = r
    return runs


def data_to_target(curves: dict[int, dict], targets: dict[int, float], budget: int) -> dict:
    """Per seed, the data a run needs to reach that seed's target, and as a fraction of
    ``budget``; mean and spread of the fractions when every seed reaches it."""
    tokens = {s: tokens_to_reach(curves[s]["curve"], targets[s]) for s in targets
              if s in curves}
    reached = [t / budget for t in tokens.values() if t is not None]
    out = {"tokens": tokens, "seeds": len(tokens), "reached": len(reached),
           "fraction_mean": None, "fraction_sd": None}
    if reached and len(reached) == len(tokens):
        out["fraction_mean"], out["fraction_sd"] = mean_sd(reached)
    return out


def verdict(first: dict, last: dict, margin: float = MARGIN) -> dict:
    """Shrinks, holds, grows, unresolved or no gain, from the data fractions at the
    smallest (``first``) and largest (``last``) level (``data_to_target``'s dicts), by the
    pre-registered rules."""
    ok1 = first["reached"] == first["seeds"] > 0
    ok2 = last["reached"] == last["seeds"] > 0
    if ok1 and ok2:
        delta = last["fraction_mean"] - first["fraction_mean"]
        se = math.sqrt(first["fraction_sd"] ** 2 / first["seeds"]
                       + last["fraction_sd"] ** 2 / last["seeds"])
        if delta < -margin and delta + 2 * se < 0:
            word = "grows"
        elif delta > margin and delta - 2 * se > 0:
            word = "shrinks"
        elif abs(delta) <= margin:
            word = "holds"
        else:
            word = "unresolved"
        return {"verdict": word, "delta": delta, "se": se, "margin": margin,
                "why": f"data fraction {first['fraction_mean']:.3f} -> "
                       f"{last['fraction_mean']:.3f}: change {delta:+.3f}, two standard "
                       f"errors {2 * se:.3f}, margin {margin:.2f}"}
    word = "no gain"
    if ok1 and first["fraction_mean"] < 1 - margin:
        word = "shrinks"
    elif ok2 and last["fraction_mean"] < 1 - margin:
        word = "grows"
    reach = ", ".join(f"{d['reached']} of {d['seeds']} seeds reach it at the "
                      f"{'smallest' if d is first else 'largest'} level"
                      for d in (first, last))
    return {"verdict": word, "delta": None, "se": None, "margin": margin,
            "why": f"the baseline's final loss not reached everywhere: {reach}"}


def _final(runs: dict[int, dict], key: str = "val_loss") -> dict[int, float]:
    return {s: r[key] for s, r in runs.items()}


def _paired(a: dict[int, float], b: dict[int, float], op) -> dict | None:
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    values = [op(a[s], b[s]) for s in seeds]
    mean, sd = mean_sd(values)
    return {"mean": mean, "sd": sd, "seeds": len(seeds)}


def _same_steps(base: dict, control: dict, composed: dict) -> dict:
    """The same-steps control at one level: mean final losses and steps of the three
    arms, and the shares of the gain (baseline - composed) each explanation takes."""
    loss = {name: mean_sd(list(_final(runs).values()))
            for name, runs in (("baseline", base), ("control", control),
                               ("composed", composed))}
    steps = {name: statistics.mean(r["iterations"] for r in runs.values())
             for name, runs in (("baseline", base), ("control", control),
                                ("composed", composed))}
    b, c, a = (loss[k][0] for k in ("baseline", "control", "composed"))
    gain = b - a
    return {"loss": {k: {"mean": m, "sd": s} for k, (m, s) in loss.items()}, "steps": steps,
            "gain": gain, "steps_share": (b - c) / gain if gain > 0 else None,
            "order_share": (c - a) / gain if gain > 0 else None}


def analyse(records: list[dict], preset: Preset) -> dict:
    """The pre-registered analysis of a scaling study's records (``results.run_record``
    plus arm, budget_fraction, seed; with their curves). Levels whose runs are missing
    are listed as such."""
    runs = by_run(records)
    get = lambda arm, f: runs.get((arm, round(float(f), 6)), {})   # noqa: E731
    levels, missing = [], []
    for level in preset.levels:
        base, composed = get(BASELINE, level), get(COMPOSED, level)
        if not base or not composed:
            missing.append(level_name(level))
            continue
        targets = _final(base)
        budget = budget_tokens(preset, level)
        row = {"level": level, "name": level_name(level), "budget_tokens": budget,
               "target": targets, "composed": data_to_target(composed, targets, budget)}
        control = get(CONTROL, level)
        if control:
            row["control"] = data_to_target(control, targets, budget)
            row["same_steps"] = _same_steps(base, control, composed)
        diff = _paired(_final(get(COMPOSED, level / 2)), targets, lambda x, y: x - y)
        if diff is not None:
            row["half_data"] = {**diff, "equal": abs(diff["mean"]) <= HALF_DATA_MARGIN}
        levels.append(row)
    fractions = sorted({f for (arm, f) in runs if arm == COMPOSED and (BASELINE, f) in runs})
    ratios = {f: _paired(_final(runs[(COMPOSED, f)]), _final(runs[(BASELINE, f)]),
                         lambda x, y: x / y) for f in fractions}
    equal_data = [{"fraction": f, "name": level_name(f), **r} for f, r in ratios.items() if r]
    trend = verdict(levels[0]["composed"], levels[-1]["composed"]) if len(levels) > 1 \
        else None
    return {"preset": preset.name, "composed": COMPOSED, "control": CONTROL,
            "margin": MARGIN, "half_data_margin": HALF_DATA_MARGIN, "levels": levels,
            "equal_data": equal_data, "trend": trend, "missing_levels": missing}
