"""Megatron-compatible command-line flags, their validation and the config builders.

``parse_args`` only parses; ``validate_args`` checks combinations (every problem is
reported at once, naming the flags) and fills in derived values. The builders at the
bottom turn the parsed flags into the explicit config dataclasses that ``megatron/core``,
``megatron/model`` and ``megatron/optimizer`` take, so nothing below this file reads args.
"""
from __future__ import annotations

import argparse
import os
from typing import Callable

import torch

from megatron.core import parallel_state
from megatron.checkpoint_flags import add_checkpoint_args, checkpoint_problems
from megatron.core.devices import backend_problem
from megatron.flag_sizes import size_problems
from megatron.fsdp_flags import add_fsdp_args, fsdp_problems
from megatron.deepspeed_compat import (add_deepspeed_args, apply_deepspeed_flags,
                                       check_deepspeed_batch, default_tokenizer_type)
from megatron.given_flags import given_dests
from megatron.telemetry import add_telemetry_args, telemetry_problems
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
    for add in (_add_model_args, _add_parallel_args, _add_training_args,
                _add_mixed_precision_args, _add_data_args, _add_logging_args,
                _add_data_efficiency_args, _add_moe_args, add_deepspeed_args,
                add_telemetry_args):
        add(parser)
    if extra_args_provider is not None:
        parser = extra_args_provider(parser)
    if ignore_unknown_args:
        parsed, _ = parser.parse_known_args(args)
    else:
        parsed = parser.parse_args(args)
    parsed.given_flags = given_dests(parser, args)   # explicit beats default (given_flags.py)
    return parsed


def _add_data_efficiency_args(p: argparse.ArgumentParser) -> None:
    """Curriculum learning and random-LTD flags (their modules own the definitions)."""
    from megatron.data_efficiency.config_flags import add_curriculum_args
    from megatron.data_efficiency.random_ltd.config import add_random_ltd_args
    add_curriculum_args(p)
    add_random_ltd_args(p)


def _add_moe_args(p: argparse.ArgumentParser) -> None:
    """Mixture-of-Experts flags (megatron/model/moe/flags.py owns them)."""
    from megatron.model.moe.flags import add_moe_args
    add_moe_args(p)


def _validate_moe(args: argparse.Namespace, errors: list[str]) -> None:
    """MoE flags build a valid MoEConfig (EP vs DP is a layout rule in parallel_state;
    MoE vs sequence parallelism a TransformerConfig rule)."""
    from megatron.model.moe.flags import moe_config_from_args
    if args.num_layers is None:
        return
    try:
        moe_config_from_args(args)
    except ValueError as exc:
        errors.append(str(exc))


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--num-layers", type=int, default=None)
    g.add_argument("--hidden-size", type=int, default=None)
    g.add_argument("--ffn-hidden-size", type=int, default=None)
    g.add_argument("--num-attention-heads", type=int, default=None)
    g.add_argument("--kv-channels", type=int, default=None)
    g.add_argument("--seq-length", type=int, default=None)
    g.add_argument("--max-position-embeddings", type=int, default=None)
    g.add_argument("--position-embedding-type", default="learned_absolute",
                   choices=["learned_absolute", "rope"])
    g.add_argument("--use-rotary-position-embeddings", action="store_true",
                   help="Megatron-DeepSpeed's spelling of --position-embedding-type rope")
    g.add_argument("--no-position-embedding", action="store_false",
                   dest="add_position_embedding",
                   help="no learned position table: needs rotary positions (which have none)")
    g.add_argument("--rotary-base", "--rotary-position-embeddings-theta", type=float,
                   default=10000.0)
    g.add_argument("--use-rope-scaling", action="store_true",
                   help="Llama-3's rope frequency scaling (low/high frequency factors 1 and "
                        "4 over 8192 original positions)")
    g.add_argument("--rope-scaling-factor", type=float, default=None,
                   help="with --use-rope-scaling (default 8.0)")
    g.add_argument("--normalization", default="LayerNorm", type=_normalization,
                   help="LayerNorm or RMSNorm (Megatron-DeepSpeed's layernorm / rmsnorm too)")
    g.add_argument("--group-query-attention", action="store_true")
    g.add_argument("--num-query-groups", type=int, default=None,
                   help="with --group-query-attention (default 1)")
    g.add_argument("--num-key-value-heads", type=int, default=None,
                   help="Megatron-DeepSpeed's spelling: grouped-query attention with this "
                        "many query groups")
    g.add_argument("--disable-bias-linear", action="store_false", dest="add_bias_linear",
                   help="no bias in any linear layer (attention, MLP, experts)")
    g.add_argument("--no-query-key-layer-scaling", action="store_true",
                   help="accepted for Megatron-DeepSpeed scripts; a no-op here: the softmax "
                        "is computed in fp32, where scaling the scores by 1/layer and back "
                        "changes nothing")
    g.add_argument("--swiglu", action="store_true")
    g.add_argument("--untie-embeddings-and-output-weights", action="store_true")
    g.add_argument("--init-method-std", type=float, default=0.02)
    g.add_argument("--hidden-dropout", type=float, default=0.1)
    g.add_argument("--attention-dropout", type=float, default=0.1)
    g.add_argument("--layernorm-epsilon", type=float, default=1e-5)
    g.add_argument("--make-vocab-size-divisible-by", type=int, default=128)
    g.add_argument("--vocab-size", type=int, default=None,
                   help="vocabulary size when no tokenizer is used (--tokenizer-type NullTokenizer)")


def _normalization(name: str) -> str:
    """``--normalization``: a name of ``megatron.model.norms.NORMS``, any letter case."""
    from megatron.model.norms import NORMS
    found = {n.lower(): n for n in NORMS}.get(name.lower())
    if found is None:
        raise argparse.ArgumentTypeError(f"choose from {sorted(NORMS)}, got {name!r}")
    return found


def _validate_model_variant(args: argparse.Namespace, errors: list[str]) -> None:
    """The Llama-family flags: Megatron-DeepSpeed's spellings become Megatron-LM's values
    (``position_embedding_type``, ``num_query_groups``), and no flag goes unused."""
    if args.use_rotary_position_embeddings:
        args.position_embedding_type = "rope"
    if not args.add_position_embedding and args.position_embedding_type != "rope":
        errors.append("--no-position-embedding needs rotary positions (--position-embedding-"
                      "type rope or --use-rotary-position-embeddings): this codebase has no "
                      "model without positions")
    if args.rope_scaling_factor is not None and not args.use_rope_scaling:
        errors.append("--rope-scaling-factor needs --use-rope-scaling")
    if args.use_rope_scaling and args.position_embedding_type != "rope":
        errors.append("--use-rope-scaling needs rotary positions")
    groups, kv_heads = args.num_query_groups, args.num_key_value_heads
    if groups is not None and not args.group_query_attention:
        errors.append("--num-query-groups needs --group-query-attention")
    elif kv_heads is not None and groups is not None and kv_heads != groups:
        errors.append(f"--num-key-value-heads {kv_heads} and --num-query-groups {groups} "
                      "differ")
    elif kv_heads is not None:
        args.num_query_groups = kv_heads
    elif args.group_query_attention:
        args.num_query_groups = groups or 1        # Megatron-LM's default
    heads = args.num_attention_heads
    if args.num_query_groups is not None and heads and heads % args.num_query_groups:
        errors.append(f"--num-query-groups {args.num_query_groups} does not divide "
                      f"--num-attention-heads {heads}")
    tp = args.tensor_model_parallel_size
    if args.num_query_groups is not None and tp and args.num_query_groups % tp:
        errors.append(f"--num-query-groups {args.num_query_groups} is not divisible by "
                      f"--tensor-model-parallel-size {tp} (each rank holds whole query "
                      "groups)")


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
    _validate_model(args, errors)
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


def _validate_model(args: argparse.Namespace, errors: list[str]) -> None:
    if args.max_position_embeddings is None:
        args.max_position_embeddings = args.seq_length
    _validate_model_variant(args, errors)
    h, heads = args.hidden_size, args.num_attention_heads
    if h is not None and heads is not None:
        if h % heads != 0 and args.kv_channels is None:
            errors.append(f"--hidden-size ({h}) must be divisible by --num-attention-heads "
                          f"({heads}) unless --kv-channels is given")
        if args.kv_channels is None and heads > 0:
            args.kv_channels = h // heads
        if args.ffn_hidden_size is None:
            from megatron.model.config import default_ffn_hidden_size
            args.ffn_hidden_size = default_ffn_hidden_size(h, args.swiglu)
    if (args.position_embedding_type == "learned_absolute" and args.seq_length is not None
            and args.max_position_embeddings < args.seq_length):
        errors.append(f"--seq-length ({args.seq_length}) exceeds --max-position-embeddings "
                      f"({args.max_position_embeddings}) under --position-embedding-type "
                      "learned_absolute")
    for flag in ("hidden_dropout", "attention_dropout"):
        if not 0.0 <= getattr(args, flag) < 1.0:
            errors.append(f"--{flag.replace('_', '-')} must be within [0, 1)")
    if args.recompute_method is not None and args.recompute_granularity != "full":
        errors.append("--recompute-method needs --recompute-granularity full")
    if args.recompute_granularity == "full" and args.recompute_method is None:
        args.recompute_method = "uniform"
    if args.recompute_granularity == "full" and args.recompute_num_layers is None:
        args.recompute_num_layers = 1
    if args.data_path is None and args.train_data_path is None and args.vocab_size is None:
        errors.append("give --data-path (or --train-data-path), or --vocab-size for synthetic data")
    if args.data_path and (args.train_data_path or args.valid_data_path or args.test_data_path):
        errors.append("give either --data-path (with --split) or --train-data-path / "
                      "--valid-data-path / --test-data-path, not both")


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
    if cfg.curriculum.enabled and cfg.curriculum.sampling_metrics \
            and args.dataloader_type != "single":
        errors.append(f"--dataloader-type {args.dataloader_type}: the curriculum sampler "
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
    """Remember the parsed args for ``get_args`` (top-level scripts only)."""
    global _GLOBAL_ARGS
    _GLOBAL_ARGS = args


def get_args() -> argparse.Namespace:
    """The args parsed by ``initialize_megatron``; for ``pretrain_*.py`` only."""
    if _GLOBAL_ARGS is None:
        raise RuntimeError("get_args() called before initialize_megatron()")
    return _GLOBAL_ARGS


# ---------------------------------------------------------------- config builders

def transformer_config_from_args(args: argparse.Namespace):
    """Build ``megatron.model.config.TransformerConfig`` from validated args."""
    from megatron.model.config import TransformerConfig
    from megatron.model.moe.flags import moe_config_from_args
    return TransformerConfig(
        moe=moe_config_from_args(args),
        num_layers=args.num_layers, hidden_size=args.hidden_size,
        num_attention_heads=args.num_attention_heads,
        padded_vocab_size=args.padded_vocab_size,
        vocab_size=getattr(args, "orig_vocab_size", None),   # padding ids: out of the softmax
        max_position_embeddings=args.max_position_embeddings,
        ffn_hidden_size=args.ffn_hidden_size, kv_channels=args.kv_channels,
        position_embedding_type=args.position_embedding_type, rotary_base=args.rotary_base,
        hidden_dropout=args.hidden_dropout, attention_dropout=args.attention_dropout,
        init_method_std=args.init_method_std, layernorm_epsilon=args.layernorm_epsilon,
        swiglu=args.swiglu,
        # Llama-family fields; checkpoints saved before these flags lack them (the defaults)
        normalization=getattr(args, "normalization", "LayerNorm"),
        num_query_groups=getattr(args, "num_query_groups", None),
        add_bias_linear=getattr(args, "add_bias_linear", True),
        rope_scaling=bool(getattr(args, "use_rope_scaling", False)),
        rope_scaling_factor=getattr(args, "rope_scaling_factor", None) or 8.0,
        untie_embeddings_and_output_weights=args.untie_embeddings_and_output_weights,
        params_dtype=args.params_dtype, use_cpu_initialization=args.use_cpu_initialization,
        sequence_parallel=args.sequence_parallel,
        recompute_granularity=args.recompute_granularity,
        recompute_method=args.recompute_method, recompute_num_layers=args.recompute_num_layers)


def optimizer_config_from_args(args: argparse.Namespace):
    """Build ``megatron.optimizer.OptimizerConfig`` from validated args."""
    from megatron.optimizer.optimizer_config import OptimizerConfig
    return OptimizerConfig(
        optimizer=args.optimizer, lr=args.lr, min_lr=args.min_lr,
        weight_decay=args.weight_decay, adam_beta1=args.adam_beta1,
        adam_beta2=args.adam_beta2, adam_eps=args.adam_eps, sgd_momentum=args.sgd_momentum,
        clip_grad=args.clip_grad, fp16=args.fp16, bf16=args.bf16, loss_scale=args.loss_scale,
        initial_loss_scale=args.initial_loss_scale, min_loss_scale=args.min_loss_scale,
        loss_scale_window=args.loss_scale_window, hysteresis=args.hysteresis,
        use_distributed_optimizer=args.use_distributed_optimizer,
        use_torch_fsdp2=args.use_torch_fsdp2,
        accumulate_allreduce_grads_in_fp32=args.accumulate_allreduce_grads_in_fp32)


def schedule_config_from_args(args: argparse.Namespace):
    """Build the LR schedule (``ScheduleConfig``) with warmup and decay in one unit."""
    from megatron.optimizer_param_scheduler import build_schedule_config
    if args.lr_warmup_fraction is not None:
        warmup = (args.lr_warmup_fraction, "fraction")
    else:
        warmup = next(((v, u) for v, u in ((args.lr_warmup_iters, "steps"),
                                           (args.lr_warmup_samples, "samples"),
                                           (args.lr_warmup_tokens, "tokens")) if v is not None),
                      (0, "steps"))
    decay = next(((v, u) for v, u in ((args.lr_decay_iters, "steps"),
                                      (args.lr_decay_samples, "samples"),
                                      (args.lr_decay_tokens, "tokens")) if v is not None), None)
    if decay is None:   # decay over the whole run, in the unit the run is measured in
        decay = next((v, u) for v, u in ((args.train_samples, "samples"),
                                         (args.train_tokens, "tokens"),
                                         (args.train_iters, "steps")) if v is not None)
    return build_schedule_config(
        max_lr=args.lr, min_lr=args.min_lr, decay_style=args.lr_decay_style,
        warmup=warmup, decay=decay, samples_per_step=args.global_batch_size,
        tokens_per_sample=args.seq_length, weight_decay=args.weight_decay)
