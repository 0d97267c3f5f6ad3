"""The flags of ``tasks/main.py``: Megatron's task flags on top of the training flags, the
model shape a pretrained checkpoint supplies, and the pretraining-only flags refused.

Finetuning is sized in epochs, so ``--train-iters`` is not given by the user: it is
``--epochs`` x (training examples // global batch size), computed before the flags are
validated (and so recorded in the finetuning checkpoints, as Megatron records it).
Model-shape flags that are not given come from the run the pretrained checkpoint was saved
by (its ``RunConfig``); those that are given must match it.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from megatron.core import parallel_state
from megatron.errors import BadConfigError, CheckpointError
from megatron.run_config import RunConfig

# Flags a checkpoint supplies when the command line leaves them out (their parser default
# is None, so "not given" is visible).
_FROM_CHECKPOINT = ("num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size",
                    "kv_channels", "max_position_embeddings", "seq_length", "tokenizer_type")
# What must agree with the checkpoint for its weights to load.
_MUST_MATCH = ("num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size",
               "kv_channels", "max_position_embeddings", "position_embedding_type", "swiglu",
               "orig_vocab_size")
# Pretraining flags with no meaning in finetuning: refused rather than ignored.
_REFUSED = {
    "data_path": "finetuning reads --train-data / --valid-data",
    "split": "finetuning reads --train-data / --valid-data",
    "train_data_path": "finetuning reads --train-data", "valid_data_path": "--valid-data",
    "test_data_path": "give test files as --valid-data",
    "data_cache_path": "no index caches in finetuning",
    **{name: "a pretraining sample map" for name in (
        "train_doc_idx_path", "train_sample_idx_path", "train_shuffle_idx_path",
        "train_idx_path")},
    "train_iters": "finetuning runs --epochs", "train_samples": "finetuning runs --epochs",
    "train_tokens": "finetuning runs --epochs",
    "dataloader_type": "finetuning reshuffles every epoch",
    "reset_position_ids": "GPT only", "reset_attention_mask": "GPT only",
    "eod_mask_loss": "GPT only",
    "async_save": "finetuning saves synchronously (--ckpt-format torch_dist is accepted)",
    "exit_duration_in_mins": "use --exit-interval", "exit_signal_handler": "use --exit-interval",
    "keep_last": "every step takes a whole global batch; the remainder of an epoch is left "
                 "out (Megatron's default)",
    "num_layers_per_virtual_pipeline_stage": "the interleaved schedule is not supported for "
                                             "downstream tasks (as in Megatron)",
    "num_experts": "MoE finetuning is not supported",
    "data_efficiency_config": "curriculum learning / random-LTD are not supported in "
                              "finetuning",
}


def add_tasks_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Megatron's ``tasks/main.py`` flags (those the GLUE and RACE tasks read)."""
    parser.description = ("Finetune a pretrained BERT checkpoint on a GLUE or RACE task and "
                          "score its validation files (Megatron's tasks/main.py flags).")
    g = parser.add_argument_group("tasks")
    g.add_argument("--task", default=None,
                   help="MNLI, QQP, QNLI, SST-2, CoLA, STS-B, MRPC, RTE or RACE")
    g.add_argument("--epochs", type=int, default=None,
                   help="finetuning epochs; 0 evaluates --valid-data only")
    g.add_argument("--pretrained-checkpoint", default=None,
                   help="the BERT checkpoint to start from (any TP/PP layout)")
    g.add_argument("--keep-last", action="store_true",
                   help="Megatron's: keep an epoch's last partial batch (refused here)")
    g.add_argument("--train-data", nargs="+", default=None,
                   help="training files (GLUE: TSVs; RACE: folders of .txt files)")
    g.add_argument("--valid-data", nargs="*", default=None,
                   help="validation files, each scored on its own and all together")
    g.add_argument("--eval-micro-batch-size", type=int, default=None,
                   help="micro-batch size of the end-of-epoch scoring (default "
                        "--micro-batch-size)")
    g.add_argument("--results-file", default=None,
                   help="results JSON (default: SAVE/results.json with --save)")
    return parser


@dataclass(frozen=True)
class TaskFlags:
    """The task's flags, checked before Megatron is initialised (the rest of the run is
    its ``RunConfig``, whose ``extra`` holds these again)."""
    task: str
    epochs: int
    pretrained_checkpoint: str
    train_data: tuple[str, ...]
    load: str | None
    global_batch_size: int | None   # None: the flags cannot tell yet (validation names it)


def task_flags(argv: list[str] | None, tasks: tuple[str, ...]) -> TaskFlags:
    """The command line's task flags, checked (every problem at once), with the
    pretraining flags finetuning refuses."""
    from megatron.arguments import parse_args
    given = parse_args(add_tasks_args, args=argv)
    check_task_flags(given, tasks)
    refused = refused_flags(given, parse_args(add_tasks_args, args=[]))
    if refused:
        raise BadConfigError("tasks/main.py does not take these pretraining flags:\n  "
                             + "\n  ".join(refused))
    return TaskFlags(given.task, given.epochs, given.pretrained_checkpoint,
                     tuple(given.train_data or ()), given.load, global_batch_size(given))


def refused_flags(given: argparse.Namespace, defaults: argparse.Namespace) -> list[str]:
    """One line per flag of ``_REFUSED`` set away from its default, and per curriculum /
    random-LTD flag (``given``: the parsed, not yet validated flags)."""
    problems = [f"--{name.replace('_', '-')}: {why}" for name, why in _REFUSED.items()
                if getattr(given, name, None) != getattr(defaults, name, None)]
    for name, value in vars(given).items():
        if (name.startswith(("curriculum", "random_ltd")) and name not in _REFUSED
                and value != getattr(defaults, name, None)):
            problems.append(f"--{name.replace('_', '-')}: curriculum learning / random-LTD "
                            "are not supported in finetuning")
    return problems


def global_batch_size(given: argparse.Namespace) -> int | None:
    """``--global-batch-size``, else ``--micro-batch-size`` x data-parallel size (the
    rule ``validate_args`` applies; None while the flags cannot tell)."""
    if given.global_batch_size is not None:
        return given.global_batch_size
    _, dp = parallel_state.parallel_layout_problems(
        int(os.environ.get("WORLD_SIZE", "1")),
        given.tensor_model_parallel_size, given.pipeline_model_parallel_size)
    if given.micro_batch_size is None or not dp:
        return None
    return given.micro_batch_size * dp


def _value(config: RunConfig, flag: str):
    """The value of ``flag`` in a run's config (the model's shape, the sequence length,
    the tokenizer)."""
    for section in (config.training, config.tokenizer, config.model):
        if hasattr(section, flag):
            return getattr(section, flag)
    raise KeyError(flag)


def checkpoint_defaults(saved: RunConfig) -> dict:
    """Flag defaults from the run a checkpoint was saved by (the shape, the tokenizer type,
    and ``vocab_size``: the checkpoint's real vocabulary, which stands in for the
    pretraining data flags ``validate_args`` otherwise asks for)."""
    defaults = {k: _value(saved, k) for k in _FROM_CHECKPOINT if _value(saved, k) is not None}
    vocab = saved.tokenizer.orig_vocab_size or saved.tokenizer.vocab_size
    if vocab is not None:
        defaults["vocab_size"] = int(vocab)
    return defaults


def check_against_checkpoint(config: RunConfig, saved: RunConfig, where: str) -> None:
    """This run against the run a BERT checkpoint was saved by.

    Raises:
        CheckpointError: not a BERT checkpoint, or the shape / vocabulary differs (every
            difference named).
    """
    if saved.model_type != "bert":
        raise CheckpointError(f"{where} holds a {(saved.model_type or 'gpt').upper()} "
                              "model; finetuning starts from a BERT checkpoint "
                              "(pretrain_bert.py)")
    bad = [f"--{k.replace('_', '-')} {_value(config, k)!r} (checkpoint: {_value(saved, k)!r})"
           for k in _MUST_MATCH
           if _value(saved, k) is not None and _value(saved, k) != _value(config, k)]
    if bad:
        raise CheckpointError(f"{where} does not fit the flags: " + "; ".join(bad) +
                              (" (orig vocab size: the tokenizer's vocabulary, check "
                               "--vocab-file)" if any("orig-vocab" in b for b in bad) else ""))


def check_task_flags(given: argparse.Namespace, tasks: tuple[str, ...]) -> None:
    """The task flags themselves (before anything is read)."""
    problems = []
    if given.task not in tasks:
        problems.append(f"--task {given.task}: choose one of {', '.join(tasks)}")
    if given.epochs is None or given.epochs < 0:
        problems.append("--epochs N is required (0: evaluate only)")
    elif given.epochs > 0 and not given.train_data:
        problems.append("--train-data is required to finetune (--epochs > 0)")
    if not given.valid_data:
        problems.append("--valid-data is required (the files scored after every epoch)")
    if given.pretrained_checkpoint is None:
        problems.append("--pretrained-checkpoint is required (also to resume with --load: "
                        "the model shape is read from it)")
    if given.eval_micro_batch_size is not None and given.eval_micro_batch_size < 1:
        problems.append("--eval-micro-batch-size must be >= 1")
    if problems:
        raise BadConfigError("tasks/main.py:\n  " + "\n  ".join(problems))
