"""Top-k routing: gate probabilities, the load-balancing loss, capacity and token drops.

Pure functions on flattened tokens (``T = s * b``) plus the ``Router`` module (the fp32
linear gate). Routing follows Switch (top-1) and GShard / DeepSpeed (top-2):

* ``probs = softmax(x @ W_g)`` in fp32; the chosen experts are the top-k of ``probs``;
  the combine weight of a top-1 choice is its probability, top-k weights (k > 1) are
  renormalised to sum to 1 (equal to a softmax over the k chosen logits).
* load-balancing loss ``E / (T k) * sum_e n_e * P_e`` with ``n_e`` the assignments to
  expert ``e`` (before capacity) and ``P_e = sum_t probs[t, e] / T`` (Switch eq. 4;
  for k = 1 exactly DeepSpeed's ``E * sum(me * ce)``).
* capacity ``max(ceil(T * k / E * factor), min_capacity)`` assignments per expert and
  rank; assignments over it are dropped (their token keeps the residual only).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from megatron.core.tensor_parallel.layers import init_whole_weight
from megatron.model.precision import Fp32Module


def topk_routing(logits: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor,
                                                            torch.Tensor]:
    """Gate probabilities and the top-k choices.

    Args:
        logits: [T, E] router logits (any float dtype; fp32 in the model).
        topk: experts per token.

    Returns:
        ``(probs [T, E], weights [T, k], experts [T, k] long)``; ``weights`` are
        differentiable with respect to ``logits``.
    """
    probs = torch.softmax(logits, dim=-1)
    top, experts = torch.topk(probs, topk, dim=-1)
    weights = top if topk == 1 else top / top.sum(dim=-1, keepdim=True)
    return probs, weights, experts


def expert_counts(experts: torch.Tensor, num_experts: int) -> torch.Tensor:
    """[T, k] expert ids -> [E] number of assignments per expert (float)."""
    return torch.bincount(experts.reshape(-1), minlength=num_experts).to(torch.float32)


def load_balancing_loss(probs: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """Switch / GShard auxiliary loss (without its coefficient); 1.0 when balanced.

    Args:
        probs: [T, E] gate probabilities.
        experts: [T, k] chosen experts.

    Returns:
        Scalar fp32 ``E / (T k) * sum_e n_e * mean_t probs[t, e]``.
    """
    tokens, num_experts = probs.shape
    topk = experts.shape[1]
    counts = expert_counts(experts, num_experts)                # [E], no gradient
    mean_probs = probs.float().mean(dim=0)                      # [E]
    return num_experts / (tokens * topk) * torch.sum(counts * mean_probs)


def expert_capacity(num_tokens: int, num_experts: int, topk: int,
                    capacity_factor: float | None, min_capacity: int) -> int | None:
    """Assignments one expert accepts from one rank's ``num_tokens`` tokens (None: all)."""
    if capacity_factor is None:
        return None
    return max(math.ceil(num_tokens * topk / num_experts * capacity_factor), min_capacity)


def capacity_keep_mask(weights: torch.Tensor, experts: torch.Tensor, num_experts: int,
                       capacity: int | None, policy: str) -> torch.Tensor:
    """Which assignments fit their expert's capacity.

    Priority within an expert: ``position`` takes first choices before second choices,
    each in token order (GShard / DeepSpeed); ``probs`` takes the highest weights first,
    ties in that same order. Deterministic: no random draw.

    Args:
        weights: [T, k] combine weights.
        experts: [T, k] expert ids.
        num_experts: E.
        capacity: assignments per expert, ``None`` keeps all.
        policy: ``probs`` or ``position``.

    Returns:
        Bool [T, k], True where the assignment is kept.
    """
    if capacity is None:
        return torch.ones_like(experts, dtype=torch.bool)
    flat_e = experts.t().reshape(-1)                 # choice-major order: [k * T]
    order = torch.arange(flat_e.numel(), device=flat_e.device)
    if policy == "probs":
        by_key = torch.argsort(-weights.detach().t().reshape(-1).float(), stable=True)
    else:
        by_key = order
    by_expert = by_key[torch.argsort(flat_e[by_key], stable=True)]   # grouped, key order
    counts = torch.bincount(flat_e, minlength=num_experts)
    starts = torch.cumsum(counts, 0) - counts
    rank_in_expert = torch.empty_like(order)
    rank_in_expert[by_expert] = order - starts[flat_e[by_expert]]
    keep = rank_in_expert < capacity
    return keep.view(experts.shape[1], experts.shape[0]).t()


class Router(Fp32Module):
    """The linear gate ``h -> E`` kept and applied in fp32 (replicated on TP ranks): the
    weight stays fp32 when the model is cast to bf16/fp16 (``precision.Fp32Module``)."""

    def __init__(self, hidden_size: int, num_experts: int, init_method) -> None:
        super().__init__()
        weight = init_whole_weight((num_experts, hidden_size), init_method)
        self.weight = nn.Parameter(weight.to(torch.float32))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """[T, h] -> fp32 logits [T, E]."""
        return torch.nn.functional.linear(tokens.float(), self.weight)
