"""The telemetry flags (Megatron-LM's names) and their checks; ``megatron.telemetry``
holds what they switch on."""
from __future__ import annotations

import argparse
import importlib.util

WANDB_INSTALL = "pip install wandb (listed in requirements-eval.txt)"


def add_telemetry_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("telemetry")
    g.add_argument("--timing-log-level", type=int, default=0, choices=[0, 1, 2],
                   help="0: the iteration time only (no timer syncs the step); 1: phases run "
                        "about once per step (forward-backward, gradient sync, optimizer "
                        "parts); 2: also per micro-batch phases (batch generator, forward "
                        "and backward compute, pipeline send/receive). Levels 1 and 2 "
                        "synchronise the GPU around each timed phase")
    g.add_argument("--timing-log-option", default="minmax", choices=["max", "minmax", "all"],
                   help="report each timer's max over ranks, (min, max), or every rank's")
    g.add_argument("--no-barrier-with-level-1-timing", action="store_false",
                   dest="barrier_with_L1_time",
                   help="level-1 step timers start and stop without a barrier over all ranks")
    g.add_argument("--log-timers-to-tensorboard", action="store_true",
                   help="write iteration-time and the timers (<name>-time) to TensorBoard")
    g.add_argument("--log-throughput", action="store_true",
                   help="accepted for Megatron-LM scripts: the iteration line always shows "
                        "throughput per GPU (TFLOP/s/GPU) here")
    g.add_argument("--peak-tflops", type=float, default=None,
                   help="per-device peak TFLOP/s for the MFU field (default: the bf16 dense "
                        "peak of a known GPU; no MFU on CPU)")
    g.add_argument("--log-memory-to-tensorboard", action="store_true",
                   help="write memory (mem-allocated-bytes, mem-reserved-bytes, "
                        "mem-max-allocated-bytes on GPU; mem-rss-bytes, mem-max-rss-bytes "
                        "on CPU) to TensorBoard")
    g.add_argument("--log-memory-interval", type=int, default=None,
                   help="print the memory report every this many iterations (a multiple "
                        "of --log-interval; it is always printed at the first log step)")
    g.add_argument("--wandb-project", default=None,
                   help="also log to this Weights & Biases project (needs wandb)")
    g.add_argument("--wandb-exp-name", default=None, help="the W&B run name")
    g.add_argument("--wandb-save-dir", default=None,
                   help="where W&B writes its files (default: <--save>/wandb)")


def telemetry_problems(args: argparse.Namespace) -> list[str]:
    """What is wrong with the telemetry flags (every problem, each naming its flag)."""
    problems = []
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        problems.append(f"--peak-tflops must be > 0, got {args.peak_tflops}")
    interval = args.log_memory_interval
    if interval is not None and (interval < 1 or interval % max(1, args.log_interval)):
        problems.append(f"--log-memory-interval {interval} must be a positive multiple of "
                        f"--log-interval {args.log_interval}")
    if args.wandb_project:
        if not args.wandb_exp_name:
            problems.append("--wandb-project needs --wandb-exp-name (the run's name)")
        if not args.wandb_save_dir and not args.save:
            problems.append("--wandb-project needs --wandb-save-dir or --save (W&B writes "
                            "its files there)")
        if importlib.util.find_spec("wandb") is None:
            problems.append(f"--wandb-project needs the wandb package: {WANDB_INSTALL}")
    return problems
