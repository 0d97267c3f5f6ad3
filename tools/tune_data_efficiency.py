"""The paper's low-cost tuning (section 3.3): on a small fraction of the training (default
2%), binary-search the smallest d_s (CL) or r_s (random-LTD), then the largest T_c / T_r,
for which the validation perplexity never rises above 1.3x the best seen so far.

    python tools/tune_data_efficiency.py --technique cl --metric seqtru --preset cpu \\
        --out build/tune_seqtru
    python tools/tune_data_efficiency.py --technique ltd --preset gpu-125m --out tune_ltd \\
        --data-path DATA_text_document --tokenizer-type GPT2BPETokenizer \\
        --vocab-file gpt2-vocab.json --merge-file gpt2-merges.txt

Each trial is an ordinary pretraining run of the preset's model on the given data (flags
after -- go to every trial) with the LR, T_c and T_r schedules compressed into the trial;
T_c / T_r are fractions of a run's steps, so they carry over to the full run. A trial
evaluates on the whole validation split every ceil(steps / 8) steps and at its end.
Trials too short to separate the settings are refused before anything runs (fewer than 4
evaluations: the message names the --fraction that gives 4), and a search whose trials
all gave the same perplexities ends with exit status 3 and no flags; --force goes on in
both cases, with the warning. Writes DIR/tuning.json and prints the flags to paste.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron.study import data as study_data  # noqa: E402
from megatron.study.cli import add_data_args, data_spec, preset_from_args, split_extra  # noqa: E402,E501
from megatron.study.commands import budget_tokens, nominal_steps  # noqa: E402
from megatron.study.results import write_atomic  # noqa: E402
from megatron.study.progress import Progress, print_flush  # noqa: E402
from megatron.study.runner import RunFailed  # noqa: E402
from megatron.study.trials import (DURATIONS, MIN_EVALUATIONS, fraction_needed,  # noqa: E402
                                   start_candidates, technique, trial_evaluations,
                                   trial_preset, trial_runner, trial_steps)
from megatron.study.tuning import max_trials, separated, tune  # noqa: E402

NO_SIGNAL = 3   # exit status: the trials could not tell the settings apart


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                epilog="Flags after -- go to every trial's pretrain run.")
    add_data_args(p)
    p.add_argument("--technique", required=True, choices=["cl", "ltd"])
    p.add_argument("--metric", default=None,
                   help="cl: seqtru, seqres, voc (GPT); seqtru, seqreo, seqreo_voc, voc (BERT)")
    p.add_argument("--fraction", type=float, default=0.02,
                   help="each trial's share of the preset's token budget (default 2%%)")
    p.add_argument("--ratio", type=float, default=1.3,
                   help="stability bound: perplexity <= ratio x the best so far")
    p.add_argument("--starts", default=None,
                   help="comma-separated candidate starts (tokens, or percent for voc/seqreo)")
    p.add_argument("--durations", default=None,
                   help="comma-separated candidate durations (fractions; default 0.1..1.0)")
    p.add_argument("--threads-per-job", type=int, default=None,
                   help="OMP_NUM_THREADS of each trial run (default: all cores; trials run "
                        "one after the other)")
    p.add_argument("--force", action="store_true",
                   help="run trials shorter than %d evaluations, and print the flags even "
                        "when every trial gave the same perplexities" % MIN_EVALUATIONS)
    argv, extra = split_extra(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    if args.technique == "cl" and args.metric is None:
        p.error("--technique cl needs --metric")
    return args, extra


def paste_flags(tech, preset, start, duration) -> dict[str, str]:
    """The tuned values as flags for a full run of the preset and for the study."""
    steps = nominal_steps(preset, budget_tokens(preset, 1.0))
    total = max(1, round(duration * steps))
    if tech.arm.random_ltd:
        return {"pretrain": f"--random-ltd-min-seqlen {start:g} --random-ltd-total-steps {total}",
                "study": f"--r-s {start / preset.seq_length:g} --t-r {duration:g}"}
    study_start = (f"--d-s-seqlen {start / preset.seq_length:g}"
                   if tech.start_unit == "tokens" else f"--d-s-percentile {start:g}")
    return {"pretrain": f"--curriculum-min-difficulty {start:g} "
                        f"--curriculum-total-steps {total}",
            "study": f"{study_start} --t-c {duration:g}"}


def too_short(preset, fraction: float) -> str | None:
    """Why trials of ``fraction`` cannot separate the settings (None: long enough)."""
    steps = trial_steps(preset, fraction)
    evaluations = trial_evaluations(steps)
    if evaluations >= MIN_EVALUATIONS:
        return None
    return (f"trials of --fraction {fraction:g} of the {preset.name} preset's budget are "
            f"{steps} step(s) with {evaluations} evaluation(s); the stability rule needs at "
            f"least {MIN_EVALUATIONS} evaluations to see a rise: use --fraction "
            f"{fraction_needed(preset):g} or more")


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    preset = preset_from_args(args)
    tech = technique(args.technique, args.metric)
    short = too_short(preset, args.fraction)
    if short and not args.force:
        print(f"error: {short} (or --force)", file=sys.stderr)
        return 2
    if short:
        print(f"warning: {short}; going on (--force)", file=sys.stderr)
    trial = trial_preset(preset, args.fraction)
    starts = ([float(s) for s in args.starts.split(",")] if args.starts
              else start_candidates(tech, preset.seq_length))
    durations = [float(d) for d in args.durations.split(",")] if args.durations else DURATIONS
    default = getattr(preset.hyper, tech.duration_key)
    os.makedirs(args.out, exist_ok=True)
    bound = max_trials(len(starts), len(set(durations) | {default}))
    progress = Progress(bound, print_flush, unit="trial", at_most=True)
    data = data_spec(args) or study_data.default_corpus(preset, os.path.join(args.out, "data"),
                                                        progress.say)
    threads = args.threads_per_job or (os.cpu_count() or 1)
    steps = trial_steps(preset, args.fraction)
    progress.say(f"binary search: at most {bound} trials of {steps}+ steps "
                 f"({trial_evaluations(steps)} evaluations each), {threads} thread(s)")
    try:
        run = trial_runner(trial, tech, data, args.out, tuple(extra), threads, progress)
        result = tune(run, sorted(starts), sorted(durations), default, args.ratio)
    except RunFailed as exc:
        print(f"tuning stopped: {exc}", file=sys.stderr)
        return 1
    return report(args, preset, tech, result)


def report(args, preset, tech, result) -> int:
    """Write tuning.json and print the result (the flags only when the trials told the
    settings apart, or with --force)."""
    start_key = "r_s" if tech.arm.random_ltd else "d_s"
    dur_key = "T_r" if tech.arm.random_ltd else "T_c"
    out = {start_key: result.start, dur_key: result.duration, "technique": args.technique,
           "metric": args.metric, "preset": preset.name, "model": preset.model,
           "fraction": args.fraction, "ratio": args.ratio,
           "start_unit": tech.start_unit, "duration_unit": "fraction of the run's steps",
           "trials": result.to_dict()["trials"]}
    signal = separated(result.trials)
    if result.start is not None and (signal or args.force):
        out["flags"] = paste_flags(tech, preset, result.start, result.duration)
    if not signal:
        out["warning"] = (f"all {len(result.trials)} trials gave the same validation "
                          f"perplexities: the trials are too short to separate the settings")
    write_atomic(os.path.join(args.out, "tuning.json"), json.dumps(out, indent=1) + "\n")
    print(f"\n{len(result.trials)} trials; {start_key} = {result.start}, "
          f"{dur_key} = {result.duration}  ({os.path.join(args.out, 'tuning.json')})")
    if not signal:
        longer = max(fraction_needed(preset, 8), round(min(1.0, 2 * args.fraction), 4))
        print(f"warning: {out['warning']}; the result is no evidence either way. Rerun with "
              f"a larger --fraction (e.g. {longer:g})", file=sys.stderr)
        if not args.force:
            return NO_SIGNAL
    if result.start is None:
        print("no start kept the perplexity stable: keep the paper's presets")
        return 0
    print(f"{preset.script} flags for the full {preset.name} run: "
          f"{out['flags']['pretrain']}")
    print(f"study flags: {out['flags']['study']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
