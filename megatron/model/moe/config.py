"""MoEConfig: which layers hold experts and how tokens are routed, built once from flags."""
from __future__ import annotations

from dataclasses import dataclass

DROP_POLICIES = ("probs", "position")


@dataclass(frozen=True)
class MoEConfig:
    """Mixture-of-Experts settings (validated on construction).

    Attributes:
        num_experts: experts in every MoE layer.
        moe_layer_ids: global 0-based ids of the layers whose MLP is an MoE layer.
        topk: experts per token (1 = Switch, 2 = GShard).
        aux_loss_coeff: weight of the load-balancing loss added to the LM loss.
        train_capacity_factor: expert capacity in training, as a multiple of the even
            share ``tokens * topk / num_experts``; ``None`` = no token is ever dropped.
        eval_capacity_factor: the same for evaluation (``None`` = no drop).
        min_capacity: lower bound of the capacity (tokens per expert per rank).
        token_drop_policy: over capacity, drop the lowest-probability assignments
            (``probs``) or the latest ones in token order (``position``).
        expert_model_parallel_size: ranks the experts of one layer are split over.
    """

    num_experts: int
    moe_layer_ids: frozenset[int]
    topk: int = 1
    aux_loss_coeff: float = 0.01
    train_capacity_factor: float | None = 1.0
    eval_capacity_factor: float | None = 1.0
    min_capacity: int = 4
    token_drop_policy: str = "probs"
    expert_model_parallel_size: int = 1

    def __post_init__(self) -> None:
        problems = []
        if self.num_experts < 1:
            problems.append(f"--num-experts must be >= 1, got {self.num_experts}")
        if not 1 <= self.topk <= max(1, self.num_experts):
            problems.append(f"--moe-router-topk must be within [1, --num-experts "
                            f"{self.num_experts}], got {self.topk}")
        if self.aux_loss_coeff < 0:
            problems.append(f"--moe-aux-loss-coeff must be >= 0, got {self.aux_loss_coeff}")
        for name in ("train_capacity_factor", "eval_capacity_factor"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                problems.append(f"--moe-{name.replace('_', '-')} must be > 0 (or give "
                                f"--disable-moe-token-dropping), got {value}")
        if self.min_capacity < 0:
            problems.append(f"--moe-min-capacity must be >= 0, got {self.min_capacity}")
        if self.token_drop_policy not in DROP_POLICIES:
            problems.append(f"--moe-token-drop-policy must be one of {DROP_POLICIES}, "
                            f"got {self.token_drop_policy!r}")
        ep = self.expert_model_parallel_size
        if ep < 1 or self.num_experts % ep != 0:
            problems.append(f"--num-experts {self.num_experts} is not divisible by "
                            f"--expert-model-parallel-size {ep}")
        if problems:
            raise ValueError("invalid MoE config:\n  " + "\n  ".join(problems))

    @property
    def num_local_experts(self) -> int:
        return self.num_experts // self.expert_model_parallel_size

    def capacity_factor(self, training: bool) -> float | None:
        return self.train_capacity_factor if training else self.eval_capacity_factor


def moe_layer_ids(num_layers: int, layer_freq: int | None = None,
                  expert_interval: int | None = None) -> frozenset[int]:
    """Global layer ids of the MoE layers.

    Megatron-LM's ``--moe-layer-freq K`` makes layer ``i`` (0-based) an MoE layer when
    ``i % K == 0`` (layers 0, K, 2K, ...); Megatron-DeepSpeed's ``--expert-interval K``
    counts 1-based, so its MoE layers are ``K-1, 2K-1, ...``. Both are kept as the
    references define them.
    """
    if layer_freq is not None and expert_interval is not None:
        raise ValueError("give --moe-layer-freq or --expert-interval, not both")
    if layer_freq is not None:
        if layer_freq < 1:
            raise ValueError(f"--moe-layer-freq must be >= 1, got {layer_freq}")
        return frozenset(i for i in range(num_layers) if i % layer_freq == 0)
    k = 1 if expert_interval is None else expert_interval
    if k < 1:
        raise ValueError(f"--expert-interval must be >= 1, got {k}")
    return frozenset(i for i in range(num_layers) if (i + 1) % k == 0)
