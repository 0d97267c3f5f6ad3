"""MoE command-line flags (Megatron-LM names, Megatron-DeepSpeed names as aliases) and
their one translation into ``MoEConfig``."""
from __future__ import annotations

import argparse
from collections.abc import Mapping

from megatron.model.moe.config import DROP_POLICIES, MoEConfig, moe_layer_ids


def add_moe_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("mixture of experts")
    g.add_argument("--num-experts", type=int, nargs="+", default=None,
                   help="experts per MoE layer; 1 (or none) = dense. Megatron-DeepSpeed's "
                        "per-layer-group list is accepted when every entry is equal")
    g.add_argument("--moe-layer-freq", type=int, default=None,
                   help="Megatron-LM: layer i (0-based) is MoE when i %% K == 0 (default 1)")
    g.add_argument("--expert-interval", type=int, default=None,
                   help="Megatron-DeepSpeed: layer i (0-based) is MoE when (i + 1) %% K == 0")
    g.add_argument("--moe-router-topk", "--topk", dest="moe_router_topk", type=int, default=1)
    g.add_argument("--expert-model-parallel-size", "--moe-expert-parallel-size",
                   dest="expert_model_parallel_size", type=int, default=1)
    g.add_argument("--moe-aux-loss-coeff", "--moe-loss-coeff", dest="moe_aux_loss_coeff",
                   type=float, default=0.01)
    g.add_argument("--moe-expert-capacity-factor", type=float, default=None,
                   help="capacity factor in training and evaluation (Megatron-LM)")
    g.add_argument("--moe-train-capacity-factor", type=float, default=None,
                   help="capacity factor in training (Megatron-DeepSpeed; default 1.0)")
    g.add_argument("--moe-eval-capacity-factor", type=float, default=None,
                   help="capacity factor in evaluation (Megatron-DeepSpeed; default 1.0)")
    g.add_argument("--moe-min-capacity", type=int, default=4)
    g.add_argument("--moe-token-drop-policy", default="probs", choices=list(DROP_POLICIES))
    g.add_argument("--disable-moe-token-dropping", action="store_true",
                   help="no capacity limit: every token reaches its experts")


def _num_experts(flags: Mapping) -> int | None:
    values = flags.get("num_experts")   # absent in records saved before MoE
    if not values:
        return None
    if len(set(values)) != 1:
        raise ValueError(f"--num-experts {' '.join(map(str, values))}: different expert "
                         "counts per layer group are not supported; give one count")
    return None if values[0] == 1 else values[0]


def _capacity_factors(flags: Mapping) -> tuple[float | None, float | None]:
    train, evaluate = flags.get("moe_train_capacity_factor"), flags.get("moe_eval_capacity_factor")
    both = flags.get("moe_expert_capacity_factor")
    if both is not None and (train is not None or evaluate is not None):
        raise ValueError("give --moe-expert-capacity-factor or --moe-train-capacity-factor / "
                         "--moe-eval-capacity-factor, not both")
    if flags.get("disable_moe_token_dropping"):
        if both is not None or train is not None or evaluate is not None:
            raise ValueError("--disable-moe-token-dropping contradicts the capacity factors "
                             "given")
        return None, None
    if both is not None:
        return both, both
    return (1.0 if train is None else train), (1.0 if evaluate is None else evaluate)


def moe_config_from_flags(flags: Mapping) -> MoEConfig | None:
    """The run's ``MoEConfig`` from its validated flags by ``dest`` name (the command
    line's, or an old checkpoint's record: a flag it lacks has its default); None for a
    dense model; ValueError names bad flags."""
    num_experts = _num_experts(flags)
    if num_experts is None:
        if flags.get("expert_model_parallel_size", 1) != 1:
            raise ValueError("--expert-model-parallel-size needs --num-experts > 1")
        return None
    train, evaluate = _capacity_factors(flags)
    given = {field: flags[flag] for field, flag in _FIELD_FLAGS.items() if flag in flags}
    return MoEConfig(num_experts=num_experts, train_capacity_factor=train,
                     eval_capacity_factor=evaluate,
                     moe_layer_ids=moe_layer_ids(flags["num_layers"], flags.get("moe_layer_freq"),
                                                 flags.get("expert_interval")), **given)


# MoEConfig field <- the flag that sets it one to one
_FIELD_FLAGS = {"topk": "moe_router_topk", "aux_loss_coeff": "moe_aux_loss_coeff",
                "min_capacity": "moe_min_capacity", "token_drop_policy": "moe_token_drop_policy",
                "expert_model_parallel_size": "expert_model_parallel_size"}
