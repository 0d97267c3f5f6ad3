"""The ranges of the size flags, checked by ``validate_args`` before anything is derived
from them (a zero micro-batch size would otherwise end in a ZeroDivisionError, a zero
FFN width would train a model without MLPs).

``0`` keeps its Megatron meaning where it has one (``--save-interval 0``: no periodic
saves, ``--eval-iters 0``: no evaluation, ``--clip-grad 0``: no clipping, ``--num-workers
0``: load in the main process). ``--train-iters 0`` (or samples / tokens) runs no step and
only evaluates, as in Megatron-LM; with ``--eval-iters 0`` as well a pretraining run would
do nothing, which ``pretrain()`` refuses (``megatron.preflight.idle_run_problem``).
"""
from __future__ import annotations

import argparse

AT_LEAST_ONE = ("num_layers", "hidden_size", "num_attention_heads", "seq_length",
                "micro_batch_size", "global_batch_size", "max_position_embeddings",
                "ffn_hidden_size", "kv_channels", "make_vocab_size_divisible_by",
                "log_interval", "tensorboard_log_interval", "tensorboard_queue_size",
                "distributed_timeout_minutes", "recompute_num_layers",
                "num_layers_per_virtual_pipeline_stage")
AT_LEAST_ZERO = ("train_iters", "train_samples", "train_tokens", "eval_iters", "eval_interval",
                 "save_interval", "exit_interval", "num_workers", "lr_warmup_iters",
                 "lr_warmup_samples", "lr_warmup_tokens", "lr_decay_iters", "lr_decay_samples",
                 "lr_decay_tokens", "weight_decay", "clip_grad", "vocab_extra_ids", "min_lr")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def size_problems(args: argparse.Namespace) -> list[str]:
    """One message per size flag out of its range (flags not given are skipped)."""
    problems = []
    for names, low in ((AT_LEAST_ONE, 1), (AT_LEAST_ZERO, 0)):
        for name in names:
            value = getattr(args, name, None)
            if value is not None and value < low:
                problems.append(f"{_flag(name)} must be >= {low}, got {value}")
    if args.exit_duration_in_mins is not None and args.exit_duration_in_mins <= 0:
        problems.append(f"--exit-duration-in-mins must be > 0, got {args.exit_duration_in_mins}")
    return problems
