"""The paper's Tables 2 / 3 at any scale: every arm as an ordinary pretraining run, sized
in tokens, quality on the whole validation split.

    python tools/data_efficiency_study.py --preset smoke --out build/study_smoke
    python tools/data_efficiency_study.py --preset cpu --out build/study_cpu --jobs 1
    python tools/data_efficiency_study.py --preset gpu-125m --out study \\
        --data-path DATA_text_document --tokenizer-type GPT2BPETokenizer \\
        --vocab-file gpt2-vocab.json --merge-file gpt2-merges.txt \\
        --arms baseline,CL_seqtru_voc+random-LTD --budgets 0.5

Writes DIR/study.md, DIR/study.json, DIR/loss_vs_tokens.png, DIR/loss_vs_time.png, one
folder per run under DIR/runs/ and its TensorBoard events under DIR/tensorboard/. Rerunning
skips finished runs and resumes an interrupted one from its checkpoint.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron.study.cli import add_data_args, data_spec, preset_from_args, split_extra  # noqa: E402,E501
from megatron.study.runner import RunFailed, StudyConfig, run_study  # noqa: E402


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                epilog="Flags after -- go to every pretrain_*.py run.")
    add_data_args(p)
    p.add_argument("--seeds", type=int, default=None, help="seeds per arm (default: preset's)")
    p.add_argument("--arms", default=None, help="comma-separated arm names (default: all)")
    p.add_argument("--budgets", default=None,
                   help="comma-separated budget fractions to keep, e.g. 1,0.5 (default: all)")
    p.add_argument("--jobs", type=int, default=1, help="runs side by side")
    argv, extra = split_extra(sys.argv[1:] if argv is None else argv)
    return p.parse_args(argv), extra


def select_plan(plan, arms: str | None, budgets: str | None) -> list[tuple[str, float]]:
    """The preset's (arm, budget) pairs filtered by --arms / --budgets; an arm asked for
    but absent from the plan runs at every budget given (100% by default)."""
    keep_b = None if budgets is None else [float(b) for b in budgets.split(",")]
    chosen = list(plan)
    if arms is not None:
        names = [a.strip() for a in arms.split(",") if a.strip()]
        chosen = [(a, f) for a, f in plan if a in names]
        for a in names:
            if not any(a == c for c, _ in chosen):
                chosen += [(a, f) for f in (keep_b or [1.0])]
    if keep_b is not None:
        chosen = [(a, f) for a, f in chosen if any(abs(f - b) < 1e-9 for b in keep_b)]
    if not chosen:
        raise ValueError("--arms / --budgets leave no run to do")
    return chosen


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    try:
        preset = preset_from_args(args)
        cfg = StudyConfig(preset=preset, out_dir=args.out, seeds=args.seeds or preset.seeds,
                          plan=select_plan(preset.plan, args.arms, args.budgets),
                          data=data_spec(args), jobs=args.jobs,
                          threads_per_job=args.threads_per_job, extra=tuple(extra))
        _, paths = run_study(cfg)
    except RunFailed as exc:
        print(f"study stopped: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:   # a bad preset, arm or budget, or no data for the preset
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with open(os.path.join(args.out, "study.md")) as f:
        print("\n" + f.read())
    print("outputs: " + ", ".join(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
