"""Megatron-compatible command-line flags, their validation and the run's config: the
arguments layer (with the ``*_flags.py`` modules, each owning its area's flags).

``parse_args`` only parses; ``validate_args`` checks combinations (every problem is
reported at once, naming the flags) and fills in derived values; ``run_config_from_args``
then builds the ``RunConfig`` (``megatron.config_from_flags``) that everything below takes,
so nothing below the arguments layer reads the namespace (``tests/test_layering.py``).
"""
from __future__ import annotations

import argparse
import os
from typing import Callable

import torch

from megatron.config_from_flags import (optimizer_config_from_flags, run_config_from_flags,
                                        schedule_config_from_flags,
                                        transformer_config_from_flags)
from megatron.core import parallel_state
from megatron.checkpoint_flags import add_checkpoint_args, checkpoint_problems
from megatron.core.devices import backend_problem
from megatron.flag_sizes import size_problems
from megatron.fsdp_flags import add_fsdp_args, fsdp_problems
from megatron.deepspeed_compat import (add_deepspeed_args, apply_deepspeed_flags,
                                       check_deepspeed_batch, default_tokenizer_type)
from megatron.given_flags import given_dests
from megatron.model.moe.flags import moe_config_from_flags
from megatron.model_flags import add_model_args, validate_model
from megatron.run_config import RunConfig, TokenizerConfig
from megatron.telemetry_flags import add_telemetry_args, telemetry_problems
from megatron.tokenizer import vocab_size_with_padding

_GLOBAL_ARGS: argparse.Namespace | None = None


class ArgumentValidationError(ValueError):
    """Raised by ``validate_args``; the message lists every bad flag combination."""


def parse_args(extra_args_provider: Callable | None = None, ignore_unknown_args: bool = False,
               args: list[str] | None = None) -> argparse.Namespace:
    """Parse Megatron's flags (plus any added by ``extra_args_provider``).

    Args:
        extra_args_provider: ``fn(parser) -> parser`` adding more flags.
        ignore_unknown_args: if True, unknown flags are dropped instead of failing.
        args: the argument list; ``None`` reads ``sys.argv[1:]``.
    """
    parser = argparse.ArgumentParser(description="Megatron-style pretraining.",
                                     allow_abbrev=False)
    for add in (add_model_args, _add_parallel_args, _add_training_args,
                _add_mixed_precision_args, _add_data_args, _add_logging_args,
                _add_data_efficiency_args, _add_moe_args, add_deepspeed_args,
                add_telemetry_args):
        add(parser)
    own = {a.dest for a in parser._actions}
    if extra_args_provider is not None:
        parser = extra_args_provider(parser)
    if ignore_unknown_args:
        parsed, _ = parser.parse_known_args(args)
    else:
        parsed = parser.parse_args(args)
    parsed.given_flags = given_dests(parser, args)   # explicit beats default (given_flags.py)
    parsed.extra_flags = tuple(sorted({a.dest for a in parser._actions} - own - {"help"}))
    return parsed


def _add_data_efficiency_args(p: argparse.ArgumentParser) -> None:
    """Curriculum learning and random-LTD flags (their modules own the definitions)."""
    from megatron.data_efficiency.config_flags import add_curriculum_args
    from megatron.data_efficiency.random_ltd.flags import add_random_ltd_args
    add_curriculum_args(p)
    add_random_ltd_args(p)


def _add_moe_args(p: argparse.ArgumentParser) -> None:
    """Mixture-of-Experts flags (megatron/model/moe/flags.py owns them)."""
    from megatron.model.moe.flags import add_moe_args
    add_moe_args(p)


def _validate_moe(args: argparse.Namespace, errors: list[str]) -> None:
    """MoE flags build a valid MoEConfig (EP vs DP is a layout rule in parallel_state;
    MoE vs sequence parallelism a TransformerConfig rule)."""
    if args.num_layers is None:
        return
    try:
        moe_config_from_flags(vars(args))
    except ValueError as exc:
        errors.append(str(exc))


def _add_parallel_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("parallelism")
    g.add_argument("--tensor-model-parallel-size", type=int, default=1)
    g.add_argument("--pipeline-model-parallel-size", type=int, default=1)
    g.add_argument("--num-layers-per-virtual-pipeline-stage", type=int, default=None)
    g.add_argument("--sequence-parallel", action="store_true")
    g.add_argument("--use-distributed-optimizer", action="store_true")
    add_fsdp_args(g)
    g.add_argument("--use-cpu-initialization", action="store_true")
    g.add_argument("--distributed-backend", default=None, choices=["nccl", "gloo"],
                   help="default: nccl on CUDA, gloo on CPU")
    g.add_argument("--distributed-timeout-minutes", type=int, default=10)


def _add_training_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--micro-batch-size", type=int, default=None)
    g.add_argument("--global-batch-size", type=int, default=None)
    g.add_argument("--train-iters", type=int, default=None)
    g.add_argument("--train-samples", type=int, default=None)
    g.add_argument("--train-tokens", type=int, default=None)
    g.add_argument("--lr", type=float, default=None)
    g.add_argument("--min-lr", type=float, default=0.0)
    g.add_argument("--lr-decay-style", default="linear", choices=["linear", "cosine", "constant"])
    g.add_argument("--lr-warmup-iters", type=int, default=None)
    g.add_argument("--lr-warmup-fraction", type=float, default=None)
    g.add_argument("--lr-warmup-samples", type=int, default=None)
    g.add_argument("--lr-warmup-tokens", type=int, default=None)
    g.add_argument("--lr-decay-iters", type=int, default=None)
    g.add_argument("--lr-decay-samples", type=int, default=None)
    g.add_argument("--lr-decay-tokens", type=int, default=None)
    g.add_argument("--weight-decay", type=float, default=0.01)
    g.add_argument("--clip-grad", type=float, default=1.0)
    g.add_argument("--adam-beta1", type=float, default=0.9)
    g.add_argument("--adam-beta2", type=float, default=0.999)
    g.add_argument("--adam-eps", type=float, default=1e-8)
    g.add_argument("--sgd-momentum", type=float, default=0.9)
    g.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    g.add_argument("--seed", type=int, default=1234)
    g.add_argument("--recompute-granularity", default=None, choices=["full", "selective"])
    g.add_argument("--recompute-method", default=None, choices=["uniform", "block"])
    g.add_argument("--recompute-num-layers", type=int, default=None)
    g.add_argument("--exit-interval", type=int, default=None)
    g.add_argument("--exit-duration-in-mins", type=float, default=None)
    g.add_argument("--exit-signal-handler", action="store_true",
                   help="on SIGTERM / SIGINT save a checkpoint after the current step, exit 0")


def _add_mixed_precision_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("mixed precision")
    g.add_argument("--fp16", action="store_true")
    g.add_argument("--bf16", action="store_true")
    g.add_argument("--loss-scale", type=float, default=None,
                   help="static loss scale; default is dynamic loss scaling under --fp16")
    g.add_argument("--accumulate-allreduce-grads-in-fp32", action="store_true",
                   help="accumulate and all-reduce gradients in an fp32 main-grad buffer "
                        "(always on under --bf16, as in Megatron)")
    # defaults (2**32, 1.0, 1000, 2) are filled by validate_args, after a DeepSpeed JSON
    g.add_argument("--initial-loss-scale", type=float, default=None)
    g.add_argument("--min-loss-scale", type=float, default=None)
    g.add_argument("--loss-scale-window", type=int, default=None)
    g.add_argument("--hysteresis", type=int, default=None)


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data-path", nargs="*", default=None)
    g.add_argument("--split", default="969, 30, 1")
    g.add_argument("--train-data-path", nargs="*", default=None)
    g.add_argument("--valid-data-path", nargs="*", default=None)
    g.add_argument("--test-data-path", nargs="*", default=None)
    g.add_argument("--tokenizer-type", default=None,
                   help="GPT2BPETokenizer, SentencePieceTokenizer, GPTSentencePieceTokenizer, "
                        "BertWordPieceLowerCase, BertWordPieceCase, HuggingFaceTokenizer "
                        "(alias HFTokenizer; needs requirements-eval.txt), NullTokenizer "
                        "(with --vocab-size)")
    g.add_argument("--vocab-file", default=None)
    g.add_argument("--merge-file", default=None)
    g.add_argument("--tokenizer-model", default=None,
                   help="SentencePiece .model; HuggingFaceTokenizer: a local tokenizer folder "
                        "or tokenizer.json")
    g.add_argument("--vocab-extra-ids", type=int, default=0)
    g.add_argument("--num-workers", type=int, default=2)
    g.add_argument("--dataloader-type", default="single", choices=["single", "cyclic"],
                   help="training sample order: single (Megatron's sequential pass over the "
                        "shuffled samples) or cyclic (a fresh permutation every epoch)")
    g.add_argument("--reset-position-ids", action="store_true")
    g.add_argument("--reset-attention-mask", action="store_true")
    g.add_argument("--eod-mask-loss", action="store_true")
    g.add_argument("--data-cache-path", default=None)


def _add_logging_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("evaluation, logging, checkpoints")
    g.add_argument("--eval-interval", type=int, default=1000)
    g.add_argument("--eval-iters", type=int, default=100)
    g.add_argument("--eval-full", action="store_true",
                   help="each evaluation reads one whole epoch of the validation (and test) "
                        "split, every complete global batch, instead of --eval-iters "
                        "batches (--eval-iters 0 still turns evaluation off)")
    g.add_argument("--log-interval", type=int, default=100)
    g.add_argument("--tensorboard-dir", default=None)
    g.add_argument("--tensorboard-log-interval", type=int, default=1)
    g.add_argument("--tensorboard-queue-size", type=int, default=1000)
    g.add_argument("--metrics-file", default=None, metavar="PATH",
                   help="JSON-lines metrics of every logged step, evaluation, start and end "
                        "(megatron/metrics_file.py); default: metrics.jsonl in "
                        "--tensorboard-dir (none without it)")
    add_checkpoint_args(g)


def _exactly_one(args: argparse.Namespace, names: list[str], errors: list[str],
                 required: bool) -> None:
    given = [n for n in names if getattr(args, n) is not None]
    flags = " / ".join("--" + n.replace("_", "-") for n in names)
    if len(given) > 1:
        errors.append(f"give only one of {flags}; got " +
                      ", ".join("--" + n.replace("_", "-") for n in given))
    elif required and not given:
        errors.append(f"one of {flags} is required")


def validate_args(args: argparse.Namespace, defaults: dict | None = None,
                  tokenizer_vocab_size: int | None = None) -> argparse.Namespace:
    """Check flag combinations and fill derived values (in place; also returned). Nothing
    changes ``args`` afterwards.

    Derived: ``world_size``, ``rank``, ``data_parallel_size``, ``ffn_hidden_size``,
    ``kv_channels``, ``global_batch_size`` (default MBS x DP), ``num_microbatches``,
    the loss-scale defaults (after a ``--deepspeed_config``'s fp16 section, see
    ``megatron.deepspeed_compat``), ``params_dtype``,
    ``virtual_pipeline_model_parallel_size``, ``orig_vocab_size`` / ``padded_vocab_size``
    (from ``tokenizer_vocab_size``, the built tokenizer's, or ``--vocab-size``) and
    ``data_efficiency`` (the typed ``DataEfficiencyConfig``). The run's length is not
    derived here: ``args.train_iters`` stays what was given (None with
    ``--train-samples`` / ``--train-tokens``) and ``run_plan.plan_run`` is its one source.

    Raises:
        ArgumentValidationError: listing every problem, each naming its flags.
    """
    for key, value in (defaults or {}).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    errors: list[str] = []
    deepspeed_json = apply_deepspeed_flags(args, errors)   # fills flags not given
    for name in ("num_layers", "hidden_size", "num_attention_heads", "seq_length",
                 "micro_batch_size", "lr"):
        if getattr(args, name) is None:
            errors.append(f"--{name.replace('_', '-')} is required")
    # --train-tokens is a stop condition of its own beside --train-iters / --train-samples
    # (the first reached ends the run, as in Megatron-DeepSpeed)
    _exactly_one(args, ["train_iters", "train_samples"], errors, required=False)
    if args.train_iters is None and args.train_samples is None and args.train_tokens is None:
        errors.append("one of --train-iters / --train-samples / --train-tokens is required")
    _exactly_one(args, ["lr_warmup_iters", "lr_warmup_fraction", "lr_warmup_samples",
                        "lr_warmup_tokens"], errors, required=False)
    _exactly_one(args, ["lr_decay_iters", "lr_decay_samples", "lr_decay_tokens"], errors,
                 required=False)
    if args.fp16 and args.bf16:
        errors.append("--fp16 and --bf16 cannot both be given")
    if args.lr_warmup_fraction is not None and not 0.0 <= args.lr_warmup_fraction <= 1.0:
        errors.append(f"--lr-warmup-fraction must be within [0, 1], got {args.lr_warmup_fraction}")
    if args.exit_signal_handler and not args.save:
        errors.append("--exit-signal-handler needs --save (it saves a checkpoint, then exits)")
    errors += checkpoint_problems(args)
    if args.lr is not None and args.lr <= 0:
        errors.append(f"--lr must be > 0, got {args.lr}")
    if args.lr is not None and args.min_lr > args.lr:
        errors.append(f"--min-lr ({args.min_lr}) must not exceed --lr ({args.lr})")
    errors += telemetry_problems(args)
    sizes = size_problems(args)
    if sizes:   # the checks and derivations below divide by these
        raise ArgumentValidationError("invalid arguments:\n  " + "\n  ".join(errors + sizes))
    validate_model(args, errors)
    _derive_parallel(args, errors)
    _validate_moe(args, errors)
    errors.extend(fsdp_problems(args))
    check_deepspeed_batch(args, deepspeed_json, errors)
    if errors:
        raise ArgumentValidationError("invalid arguments:\n  " + "\n  ".join(errors))
    _derive_training(args, tokenizer_vocab_size)
    _build_data_efficiency(args)
    try:   # warmup vs decay span, once both are in one unit
        schedule_config_from_args(args)
    except ValueError as exc:
        raise ArgumentValidationError(f"invalid arguments:\n  {exc}") from exc
    return args


def _derive_parallel(args: argparse.Namespace, errors: list[str]) -> None:
    args.world_size = int(os.environ.get("WORLD_SIZE", "1"))
    args.rank = int(os.environ.get("RANK", "0"))
    tp, pp = args.tensor_model_parallel_size, args.pipeline_model_parallel_size
    # The layout and batch-size rules live in parallel_state (one pure function).
    _, dp = parallel_state.parallel_layout_problems(args.world_size, tp, pp)
    if args.micro_batch_size is not None and args.global_batch_size is None:
        args.global_batch_size = args.micro_batch_size * (dp or 1)
    problems, dp = parallel_state.parallel_layout_problems(
        args.world_size, tp, pp, args.num_layers, args.num_attention_heads,
        args.global_batch_size, args.micro_batch_size,
        expert_model_parallel_size=args.expert_model_parallel_size)
    errors.extend(problems)
    args.data_parallel_size = dp or 1
    problem = backend_problem(args.distributed_backend, torch.cuda.is_available())
    if problem:
        errors.append(problem)
    _derive_virtual_pipeline(args, errors)
    if pp > 2 and (args.reset_position_ids or args.reset_attention_mask):
        errors.append("--reset-position-ids / --reset-attention-mask need "
                      "--pipeline-model-parallel-size <= 2 (middle stages read no data)")
    if args.sequence_parallel and tp == 1:
        args.sequence_parallel = False   # Megatron turns it off silently without TP
    mbs, dp = args.micro_batch_size, args.data_parallel_size
    if mbs is not None:
        args.num_microbatches = max(1, args.global_batch_size // (mbs * dp))
        if args.virtual_pipeline_model_parallel_size is not None \
                and args.num_microbatches % pp != 0:
            errors.append(f"--num-layers-per-virtual-pipeline-stage: the interleaved schedule "
                          f"needs the micro-batches per step ({args.num_microbatches} = "
                          f"--global-batch-size / (--micro-batch-size x data-parallel size)) "
                          f"to be a multiple of --pipeline-model-parallel-size ({pp})")


def _derive_virtual_pipeline(args: argparse.Namespace, errors: list[str]) -> None:
    """``virtual_pipeline_model_parallel_size`` (model chunks per stage) from
    ``--num-layers-per-virtual-pipeline-stage``, as Megatron derives it."""
    args.virtual_pipeline_model_parallel_size = None
    per_chunk, layers = args.num_layers_per_virtual_pipeline_stage, args.num_layers
    if per_chunk is None:
        return
    pp = args.pipeline_model_parallel_size
    if pp < 2:
        errors.append("--num-layers-per-virtual-pipeline-stage needs "
                      "--pipeline-model-parallel-size >= 2 (interleaved 1F1B)")
    elif per_chunk < 1 or layers is None or layers % pp != 0 \
            or (layers // pp) % per_chunk != 0:
        errors.append(f"--num-layers-per-virtual-pipeline-stage ({per_chunk}) must divide the "
                      f"layers per pipeline stage (--num-layers {layers} / "
                      f"--pipeline-model-parallel-size {pp})")
    else:
        args.virtual_pipeline_model_parallel_size = layers // pp // per_chunk


def _build_data_efficiency(args: argparse.Namespace) -> None:
    """The typed data-efficiency config, and the conflicts it has with other flags."""
    from megatron.data_efficiency.config_flags import config_from_args
    try:
        args.data_efficiency = config_from_args(args)
    except ValueError as exc:
        raise ArgumentValidationError(f"invalid arguments:\n  {exc}") from exc
    errors = []
    cfg = args.data_efficiency
    if cfg.random_ltd.enabled and args.sequence_parallel:
        errors.append("--random-ltd (or data_routing.random_ltd) cannot be combined with "
                      "--sequence-parallel at --tensor-model-parallel-size > 1: the kept "
                      "tokens are gathered along the sequence, which sequence parallelism "
                      "splits across tensor-parallel ranks")
    transform = cfg.curriculum.transform_metric if cfg.curriculum.enabled else None
    if transform is not None and transform.kind == "seqres" \
            and args.pipeline_model_parallel_size > 1:
        errors.append("curriculum metric seqres changes the micro-batch shape per batch, "
                      "which pipeline stages cannot agree on without reading data; use "
                      "seqtru with --pipeline-model-parallel-size > 1")
    # Each of these draws the training order itself, which Megatron's cyclic
    # (reshuffle-every-epoch) sampler would silently replace.
    orderers = [name for name, on in (
        ("the curriculum sampler", cfg.curriculum.enabled and cfg.curriculum.sampling_metrics),
        ("dynamic_batching's sequence_picking_order", cfg.dynamic_batching.enabled)) if on]
    if orderers and args.dataloader_type != "single":
        errors.append(f"--dataloader-type {args.dataloader_type}: {' and '.join(orderers)} "
                      "orders the training samples itself; leave --dataloader-type single")
    if errors:
        raise ArgumentValidationError("invalid arguments:\n  " + "\n  ".join(errors))


def _derive_training(args: argparse.Namespace, tokenizer_vocab_size: int | None) -> None:
    args.params_dtype = torch.float16 if args.fp16 else (
        torch.bfloat16 if args.bf16 else torch.float32)
    # Megatron: bf16 gradients are accumulated and reduced in fp32, whatever the flag says
    args.accumulate_allreduce_grads_in_fp32 = args.accumulate_allreduce_grads_in_fp32 or args.bf16
    if args.tokenizer_type is None:
        args.tokenizer_type = default_tokenizer_type(args)
    vocab = tokenizer_vocab_size if tokenizer_vocab_size is not None else args.vocab_size
    args.orig_vocab_size = vocab          # saved in checkpoints (re-padding)
    args.padded_vocab_size = None if vocab is None else vocab_size_with_padding(
        vocab, args.make_vocab_size_divisible_by, args.tensor_model_parallel_size)


def set_args(args: argparse.Namespace) -> None:
    """Remember the validated flags for ``get_args`` (``initialize_megatron`` does)."""
    global _GLOBAL_ARGS
    _GLOBAL_ARGS = args


def get_args() -> argparse.Namespace:
    """The flags ``initialize_megatron`` validated, as in Megatron, for a user's own entry
    point script only: the library takes the ``RunConfig`` (``get_run_config``)."""
    if _GLOBAL_ARGS is None:
        raise RuntimeError("get_args() called before initialize_megatron()")
    return _GLOBAL_ARGS


def tokenizer_config_from_args(args: argparse.Namespace, defaults: dict | None
                               ) -> TokenizerConfig:
    """The tokenizer the flags (or the script's defaults) name, before ``validate_args``
    (which derives the padded vocabulary from the built tokenizer)."""
    tokenizer_type = args.tokenizer_type or (defaults or {}).get("tokenizer_type") or \
        default_tokenizer_type(args)
    return TokenizerConfig(tokenizer_type=tokenizer_type, vocab_file=args.vocab_file,
                           merge_file=args.merge_file, tokenizer_model=args.tokenizer_model,
                           vocab_extra_ids=args.vocab_extra_ids, vocab_size=args.vocab_size)


# ---------------------------------------------------------------- config builders

def run_config(argv: list[str], extra_args_provider: Callable | None = None,
               defaults: dict | None = None,
               tokenizer_vocab_size: int | None = None) -> RunConfig:
    """The ``RunConfig`` of a command line (parsed, validated, built; no tokenizer is
    built: the vocabulary is ``tokenizer_vocab_size`` or ``--vocab-size``).

    Raises:
        ArgumentValidationError: listing every problem of the flags.
    """
    return run_config_from_args(validate_args(parse_args(extra_args_provider, args=argv),
                                              defaults, tokenizer_vocab_size))


def run_config_from_args(args: argparse.Namespace) -> RunConfig:
    """The ``RunConfig`` of validated ``args`` (``megatron.config_from_flags``), the
    entry point's own flags (``extra_args_provider``'s) in ``extra``."""
    return run_config_from_flags(vars(args), tuple(getattr(args, "extra_flags", ())))


def transformer_config_from_args(args: argparse.Namespace):
    """Build ``megatron.model.config.TransformerConfig`` from validated args."""
    return transformer_config_from_flags(vars(args))


def optimizer_config_from_args(args: argparse.Namespace):
    """Build ``megatron.optimizer.OptimizerConfig`` from validated args."""
    return optimizer_config_from_flags(vars(args))


def schedule_config_from_args(args: argparse.Namespace):
    """Build the LR schedule (``ScheduleConfig``) with warmup and decay in one unit."""
    return schedule_config_from_flags(vars(args))
