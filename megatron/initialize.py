"""Process start-up: the run's config from the flags, torch.distributed, parallel groups,
tokenizer, seeds."""
from __future__ import annotations

import datetime
import os
import random
import sys
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from megatron.arguments import (ArgumentValidationError, parse_args, run_config_from_args,
                                set_args, tokenizer_config_from_args, validate_args)
from megatron.core import parallel_state
from megatron.core.tensor_parallel.layers import set_initialization_seed
from megatron.errors import BadConfigError, BadInputError, MissingInputError
from megatron.core.tensor_parallel.random import model_parallel_seed
from megatron.run_config import ParallelConfig, RunConfig, TokenizerConfig

_GLOBAL_TOKENIZER = None
_GLOBAL_CONFIG: RunConfig | None = None


class NullTokenizer:
    """No text, just ids ``0 .. vocab_size-1`` (``--vocab-size`` without a tokenizer);
    the last id is the end-of-document token. For synthetic data and tests."""

    def __init__(self, vocab_size: int) -> None:
        if vocab_size < 2:
            raise BadConfigError(f"--vocab-size must be at least 2 (the last id is the end "
                                 f"of document), got {vocab_size}")
        self.vocab_size = vocab_size
        self.eod = vocab_size - 1

    def tokenize(self, text: str) -> list[int]:
        return [int(t) for t in text.split()]

    def detokenize(self, ids) -> str:
        return " ".join(str(int(i)) for i in ids)


def get_run_config() -> RunConfig:
    """The run's config built by ``initialize_megatron`` (top-level scripts only)."""
    if _GLOBAL_CONFIG is None:
        raise RuntimeError("get_run_config() called before initialize_megatron()")
    return _GLOBAL_CONFIG


def get_tokenizer():
    """The tokenizer built by ``initialize_megatron`` (top-level scripts only)."""
    if _GLOBAL_TOKENIZER is None:
        raise RuntimeError("get_tokenizer() called before initialize_megatron()")
    return _GLOBAL_TOKENIZER


def _build_tokenizer(flags: TokenizerConfig):
    """The tokenizer the flags name (``validate_args`` derives the padded vocabulary from
    it). A missing or unreadable vocabulary file is a ``MissingInputError`` /
    ``BadInputError`` naming the file."""
    from megatron.tokenizer import build_tokenizer
    tokenizer_type = flags.tokenizer_type
    if tokenizer_type in (None, "NullTokenizer") and flags.vocab_size is not None:
        return NullTokenizer(flags.vocab_size)
    try:
        return build_tokenizer(tokenizer_type, vocab_file=flags.vocab_file,
                               merge_file=flags.merge_file, tokenizer_model=flags.tokenizer_model,
                               vocab_extra_ids=flags.vocab_extra_ids)
    except FileNotFoundError as err:
        where = f"{err.filename}: file not found" if err.filename else str(err)
        raise MissingInputError(f"tokenizer ({tokenizer_type}): {where}") from None
    except (OSError, ValueError) as err:
        raise BadInputError(f"tokenizer ({tokenizer_type}): {err}") from None


def _init_distributed(layout: ParallelConfig) -> None:
    """Join the torchrun process group (env://) if launched that way; else stay local."""
    timeout = datetime.timedelta(minutes=layout.distributed_timeout_minutes)
    if not dist.is_initialized() and "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ:
        backend = layout.distributed_backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, init_method="env://", timeout=timeout)
    if dist.is_initialized():
        if dist.get_world_size() != layout.world_size:
            raise RuntimeError(f"WORLD_SIZE={layout.world_size} but the process group has "
                               f"{dist.get_world_size()} ranks")
        if parallel_state.model_parallel_is_initialized():
            parallel_state.destroy_model_parallel()   # a second pretrain() in one process
        parallel_state.initialize_model_parallel(
            layout.tensor_model_parallel_size, layout.pipeline_model_parallel_size,
            layout.virtual_pipeline_model_parallel_size, timeout=timeout,
            expert_model_parallel_size=layout.expert_model_parallel_size)
    elif layout.world_size != 1:
        raise RuntimeError(f"WORLD_SIZE={layout.world_size} but no process group: launch with "
                           "torchrun (MASTER_ADDR / MASTER_PORT unset)")


def set_seeds(seed: int) -> None:
    """Seed python, numpy, torch and the tensor-parallel tracker; each pipeline stage gets
    ``seed + 100 * pp_rank`` (Megatron's offset) so stages draw different dropout.

    Weights built with ``--use-cpu-initialization`` are keyed by the base ``seed`` (and
    the parameter's global name), so they do not depend on the stage.
    """
    stage_seed = seed + 100 * parallel_state.get_pipeline_model_parallel_rank()
    random.seed(stage_seed)
    np.random.seed(stage_seed)
    torch.manual_seed(stage_seed)
    model_parallel_seed(stage_seed)
    set_initialization_seed(seed)


def initialize_megatron(extra_args_provider: Callable | None = None,
                        args_defaults: dict | None = None, ignore_unknown_args: bool = False,
                        argv: list[str] | None = None) -> RunConfig:
    """Build the run's ``RunConfig`` from the command line, set up distributed state,
    tokenizer and seeds.

    Args:
        extra_args_provider: ``fn(parser) -> parser`` for script-specific flags (their
            values are in ``RunConfig.extra``).
        args_defaults: values for flags the user did not give.
        ignore_unknown_args: drop unknown flags instead of failing.
        argv: argument list (default ``sys.argv[1:]``).

    Returns:
        The run's config (also available through ``get_run_config``).
    """
    global _GLOBAL_TOKENIZER, _GLOBAL_CONFIG
    parsed = parse_args(extra_args_provider, ignore_unknown_args, argv)
    tokenizer = _build_tokenizer(tokenizer_config_from_args(parsed, args_defaults))
    try:
        config = run_config_from_args(validate_args(parsed, args_defaults,
                                                    tokenizer_vocab_size=tokenizer.vocab_size))
    except ArgumentValidationError as exc:
        if int(os.environ.get("RANK", "0")) == 0:   # every rank fails alike: report once
            print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from exc
    _init_distributed(config.parallel)
    _GLOBAL_TOKENIZER, _GLOBAL_CONFIG = tokenizer, config
    set_args(parsed)   # get_args() for users' own entry points, as in Megatron
    set_seeds(config.training.seed)
    layout, train = config.parallel, config.training
    if layout.rank == 0:
        for note in config.flags_from_config:   # explicit beats default
            print(f" > {note}", flush=True)
        print(f" > world size {layout.world_size}: TP {layout.tensor_model_parallel_size}, "
              f"PP {layout.pipeline_model_parallel_size}, DP {layout.data_parallel_size}; "
              f"{train.num_microbatches} micro-batches of {train.micro_batch_size} per step",
              flush=True)
    return config
