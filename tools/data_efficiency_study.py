"""The paper's Tables 2 / 3 at any scale: every arm as an ordinary pretraining run, sized
in tokens, quality on the whole validation split.

    python tools/data_efficiency_study.py --preset smoke --out build/study_smoke
    python tools/data_efficiency_study.py --preset cpu --out build/study_cpu --jobs 1
    python tools/data_efficiency_study.py --preset gpu-125m --out study \\
        --data-path DATA_text_document --tokenizer-type GPT2BPETokenizer \\
        --vocab-file gpt2-vocab.json --merge-file gpt2-merges.txt \\
        --arms baseline,CL_seqtru_voc+random-LTD --budgets 0.5

--model llama runs the GPT arms and the smoke, demo and cpu presets with the Llama layer
(RMSNorm, grouped-query attention, SwiGLU, rotary, no biases, untied):

    python tools/data_efficiency_study.py --preset cpu --model llama --out build/study_cpu_llama

GPT presets also run the pruning arms (prune_ppl_middle50, prune_ppl_easy50, prune_random50):
a small reference model trains first on data disjoint from the study's (on the default
corpus, the documents after the study's; on your data, --reference-data-path) and the
analyzer scores every training sample by its perplexity.

The scaling presets (cpu-scaling; pre-registered in docs/preregistration/cpu-scaling.md)
run the baseline and CL_seqtru_voc+random-LTD at several budgets and a same-steps control,
and write their analysis to DIR/scaling.md, DIR/scaling.json and DIR/scaling_*.png.

Writes DIR/study.md, DIR/study.json, DIR/loss_vs_tokens.png, DIR/loss_vs_time.png, one
folder per run under DIR/runs/ (its checkpoints, train.log and metrics.jsonl, which the
study reads) and its TensorBoard events under DIR/tensorboard/. Rerunning skips finished
runs and resumes an interrupted one from its checkpoint.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron.study.cli import add_data_args, data_spec, preset_from_args, split_extra  # noqa: E402,E501
from megatron.study.commands import DataSpec  # noqa: E402
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
    p.add_argument("--threads-per-job", type=int, default=None,
                   help="OMP_NUM_THREADS of each run (default: cores / --jobs)")
    p.add_argument("--reference-data-path",
                   help="the pruning arms' reference model's token store (same tokenizer, "
                        "disjoint from --data-path; default corpus: a disjoint slice of it)")
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


def reference_spec(args: argparse.Namespace) -> DataSpec | None:
    """--reference-data-path with the study's tokenizer flags and cache."""
    spec = data_spec(args)
    if args.reference_data_path is None:
        return None
    if spec is None:   # the default corpus: its tokenizer is built by the study
        raise ValueError("--reference-data-path goes with --data-path and its tokenizer "
                         "flags (on the default corpus the study builds a disjoint slice)")
    return DataSpec(args.reference_data_path, spec.tokenizer_flags, spec.cache_dir)


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    try:
        preset = preset_from_args(args)
        cfg = StudyConfig(preset=preset, out_dir=args.out, seeds=args.seeds or preset.seeds,
                          plan=select_plan(preset.plan, args.arms, args.budgets),
                          data=data_spec(args), jobs=args.jobs,
                          threads_per_job=args.threads_per_job, extra=tuple(extra),
                          reference_data=reference_spec(args))
        _, paths = run_study(cfg)
    except RunFailed as exc:
        print(f"study stopped: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:   # a bad preset, arm or budget, or no data for the preset
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for report in ("study.md", "scaling.md"):   # scaling.md: a scaling preset's analysis
        if os.path.join(args.out, report) in paths:
            with open(os.path.join(args.out, report)) as f:
                print("\n" + f.read())
    print("outputs: " + ", ".join(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
