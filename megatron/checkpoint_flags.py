"""The checkpoint flags (Megatron-LM's names): where a run saves and loads, the format,
the converter, async saves and the resume overrides; and what they cannot do together.
``arguments.py`` adds them to its "evaluation, logging, checkpoints" group."""
from __future__ import annotations

import argparse


def add_checkpoint_args(g) -> None:
    """The checkpoint flags, into the argument group ``g``."""
    g.add_argument("--save", default=None)
    g.add_argument("--load", default=None)
    g.add_argument("--save-interval", type=int, default=None)
    g.add_argument("--no-save-optim", action="store_true")
    g.add_argument("--no-save-rng", action="store_true")
    g.add_argument("--no-load-optim", action="store_true")
    g.add_argument("--no-load-rng", action="store_true")
    g.add_argument("--finetune", action="store_true")
    g.add_argument("--ckpt-fallback", action="store_true",
                   help="when the newest checkpoint cannot be read, load the newest earlier "
                        "complete one (default: stop and list the loadable iterations)")
    g.add_argument("--ckpt-format", choices=["torch", "torch_dist"], default="torch",
                   help="how checkpoints are saved: torch, one torch.save file per (TP, PP) "
                        "rank; torch_dist, torch.distributed.checkpoint's sharded global "
                        "tensors, loadable under another TP / PP / DP layout with the "
                        "optimizer state (loading reads either format)")
    g.add_argument("--ckpt-convert-format", choices=["torch", "torch_dist"], default=None,
                   help="load --load, save it in this format into "
                        "--ckpt-convert-save/FORMAT (model, optimizer, RNG, scheduler and "
                        "data-efficiency state carried over), then stop without training")
    g.add_argument("--ckpt-convert-save", default=None, metavar="DIR")
    g.add_argument("--async-save", action="store_true",
                   help="torch_dist: write checkpoints in the background while training "
                        "goes on (one at a time; published when complete)")
    g.add_argument("--overwrite-checkpoints", action="store_true",
                   help="save into a --save folder holding checkpoints this run did not load "
                        "(saves replace iterations of the same number; default: refuse)")
    g.add_argument("--override-data-efficiency-state", action="store_true",
                   help="resume a checkpoint trained with another curriculum / random-LTD "
                        "schedule (the curriculum sampler restarts its streams)")
    g.add_argument("--override-training-data", action="store_true",
                   help="resume a checkpoint trained on other data, split, --seq-length, "
                        "--seed or tokenizer")


def checkpoint_problems(args: argparse.Namespace) -> list[str]:
    """What the checkpoint-format flags cannot do together."""
    problems = []
    if args.async_save and args.ckpt_format != "torch_dist":
        problems.append("--async-save needs --ckpt-format torch_dist (the torch format writes "
                        "one torch.save file per rank, synchronously)")
    if args.async_save and not args.save:
        problems.append("--async-save needs --save")
    if args.ckpt_convert_format and not (args.load and args.ckpt_convert_save):
        problems.append("--ckpt-convert-format needs --load (the checkpoint to convert) and "
                        "--ckpt-convert-save (where the converted one goes)")
    if args.ckpt_convert_format and (args.finetune or args.no_load_optim):
        problems.append("--ckpt-convert-format carries the whole checkpoint over: drop "
                        "--finetune / --no-load-optim")
    if "torch_dist" in (args.ckpt_format, args.ckpt_convert_format) and \
            (args.expert_model_parallel_size or 1) > 1:
        problems.append("--ckpt-format torch_dist does not yet name experts by their global "
                        "number: use --ckpt-format torch with --expert-model-parallel-size > 1")
    if "torch_dist" in (args.ckpt_format, args.ckpt_convert_format) and \
            getattr(args, "use_torch_fsdp2", False):
        problems.append("--ckpt-format torch_dist does not yet describe FSDP2's sharded "
                        "parameters: use --ckpt-format torch with --use-torch-fsdp2 / "
                        "--zero-stage 2|3 (whole tensors, loadable at any data-parallel size)")
    return problems
