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
    from megatron.arguments import parse_args, validate_args
    from megatron.run_plan import plan_run
    data = DataSpec("unused", ("--tokenizer-type", "NullTokenizer", "--vocab-size",
                               str(preset.vocab_size)), "unused")
    cmd = pretrain_command(preset, RunSpec(preset.arms[arm], fraction, 0), data, "run", "tb",
                           "index")
    return plan_run(validate_args(parse_args(args=cmd[1:]))).train_iters


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
