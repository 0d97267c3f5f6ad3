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
T_c / T_r are fractions of a run's steps, so they carry over to the full run. Writes
DIR/tuning.json and prints the flags to paste.
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
from megatron.study.runner import Progress, RunFailed, print_flush  # noqa: E402
from megatron.study.trials import (DURATIONS, start_candidates, technique,  # noqa: E402
                                   trial_preset, trial_runner)
from megatron.study.tuning import tune  # noqa: E402


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


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    preset = preset_from_args(args)
    tech = technique(args.technique, args.metric)
    trial = trial_preset(preset, args.fraction)
    os.makedirs(args.out, exist_ok=True)
    progress = Progress(0, print_flush)
    data = data_spec(args) or study_data.default_corpus(preset, os.path.join(args.out, "data"),
                                                        progress.say)
    starts = ([float(s) for s in args.starts.split(",")] if args.starts
              else start_candidates(tech, preset.seq_length))
    durations = [float(d) for d in args.durations.split(",")] if args.durations else DURATIONS
    default = getattr(preset.hyper, tech.duration_key)
    threads = args.threads_per_job or (os.cpu_count() or 1)
    try:
        run = trial_runner(trial, tech, data, args.out, tuple(extra), threads, progress)
        result = tune(run, sorted(starts), sorted(durations), default, args.ratio)
    except RunFailed as exc:
        print(f"tuning stopped: {exc}", file=sys.stderr)
        return 1
    start_key = "r_s" if tech.arm.random_ltd else "d_s"
    dur_key = "T_r" if tech.arm.random_ltd else "T_c"
    out = {start_key: result.start, dur_key: result.duration, "technique": args.technique,
           "metric": args.metric, "preset": preset.name, "model": preset.model,
           "fraction": args.fraction, "ratio": args.ratio,
           "start_unit": tech.start_unit, "duration_unit": "fraction of the run's steps",
           "trials": result.to_dict()["trials"]}
    if result.start is not None:
        out["flags"] = paste_flags(tech, preset, result.start, result.duration)
    write_atomic(os.path.join(args.out, "tuning.json"), json.dumps(out, indent=1) + "\n")
    print(f"\n{len(result.trials)} trials; {start_key} = {result.start}, "
          f"{dur_key} = {result.duration}  ({os.path.join(args.out, 'tuning.json')})")
    if result.start is None:
        print("no start kept the perplexity stable: keep the paper's presets")
        return 0
    print(f"pretrain_{preset.model}.py flags for the full {preset.name} run: "
          f"{out['flags']['pretrain']}")
    print(f"study flags: {out['flags']['study']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
