"""The FSDP2 flags: ``--use-torch-fsdp2`` (Megatron-LM's name) and Megatron-DeepSpeed's
``--zero-stage 2|3`` mapped onto it, the combinations refused, and the ``FSDPConfig``
built from them once.

ZeRO stage mapping (``megatron.deepspeed_compat`` reads the stage, this module decides):

* 0: plain data parallel; 1: ``--use-distributed-optimizer`` (ZeRO-1, ours).
* 2: FSDP2 with ``reshard_after_forward=False``: parameters, gradients and optimizer state
  sharded over DP; a layer's gathered weights stay until its backward (no second
  all-gather), as ZeRO-2 keeps whole parameters through the step.
* 3: FSDP2 with ``reshard_after_forward=True`` (also ``--use-torch-fsdp2`` alone, FSDP2's
  and Megatron-LM's default): gathered weights are freed after each layer's forward and
  gathered again for its backward.

Refused with FSDP2, each by name: pipeline parallelism (and so interleaving), the ZeRO-1
distributed optimizer, fp16 (no loss scaling on sharded gradients here; use --bf16) and
MoE layers (experts reduce over their own group).
"""
from __future__ import annotations

import argparse

from megatron.core.distributed.fsdp import FSDPConfig


def add_fsdp_args(group) -> None:
    """``--use-torch-fsdp2`` in the parser's parallelism group."""
    group.add_argument("--use-torch-fsdp2", action="store_true",
                       help="shard parameters, gradients and optimizer state over data-parallel "
                            "ranks with torch's FSDP2 (fully_shard); = --zero-stage 3")


def apply_zero_stage(args: argparse.Namespace, stage: int, errors: list[str]) -> None:
    """Map a ZeRO stage (``--zero-stage`` or the DeepSpeed JSON's) onto our flags."""
    args.zero_stage = stage
    if stage == 1:
        args.use_distributed_optimizer = True   # ZeRO-1: optimizer states sharded over DP
    elif stage in (2, 3):
        args.use_torch_fsdp2 = True
    elif stage != 0:
        errors.append(f"ZeRO stage {stage} (--zero-stage / zero_optimization.stage) does not "
                      "exist: 0, 1, 2 or 3")
    if args.use_torch_fsdp2 and stage in (0, 1):
        errors.append(f"--use-torch-fsdp2 contradicts ZeRO stage {stage} (--zero-stage / "
                      "zero_optimization.stage): FSDP2 is stage 2 or 3")


def _name(args: argparse.Namespace) -> str:
    stage = getattr(args, "zero_stage", None)
    return f"ZeRO stage {stage} (FSDP2)" if stage in (2, 3) else "--use-torch-fsdp2"


def fsdp_problems(args: argparse.Namespace) -> list[str]:
    """What does not compose with FSDP2 in this run, one message per flag."""
    if not args.use_torch_fsdp2:
        return []
    name, problems = _name(args), []
    if args.pipeline_model_parallel_size > 1:
        problems.append(f"{name} with --pipeline-model-parallel-size "
                        f"{args.pipeline_model_parallel_size} is not supported: FSDP2 shards "
                        "over data parallel within one pipeline stage here; use tensor "
                        "parallelism or --pipeline-model-parallel-size 1")
    if args.use_distributed_optimizer:
        problems.append(f"{name} with --use-distributed-optimizer: FSDP2 already shards the "
                        "optimizer state (ZeRO-1 is --zero-stage 1 without FSDP2); give one")
    if args.fp16:
        problems.append(f"{name} with --fp16 is not supported (no loss scaling of sharded "
                        "gradients here); use --bf16")
    if getattr(args, "num_experts", None):
        problems.append(f"{name} with --num-experts (MoE) is not supported: expert weights "
                        "reduce over the expert-data-parallel group, not FSDP's")
    return problems


def fsdp_config_from_args(args: argparse.Namespace) -> FSDPConfig:
    """The sharding of a validated ``--use-torch-fsdp2`` / ``--zero-stage 2|3`` run."""
    return FSDPConfig(reshard_after_forward=getattr(args, "zero_stage", None) != 2,
                      param_dtype=args.params_dtype if args.bf16 else None)
