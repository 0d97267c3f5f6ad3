"""MoELayer: the MLP slot of an MoE transformer layer (router + experts).

Each token goes to its top-k experts (at most ``capacity`` assignments per expert and
rank); the output is the weighted sum of its experts' outputs, zero for a token whose
every assignment was dropped, so the layer's residual connection carries it through
unchanged. Experts are ordinary ``ParallelMLP``s (column/row split under TP). With
expert parallelism each rank of the expert-parallel group holds ``E / EP`` experts and
the routed tokens move there and back by all-to-all.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from megatron.core import parallel_state
from megatron.core.tensor_parallel.layers import init_scope
from megatron.model.mlp import ParallelMLP
from megatron.model.moe import router as routing
from megatron.model.moe import token_exchange
from megatron.model.moe.aux_loss import MoEStepStats, attach_aux_loss
from megatron.model.moe.config import MoEConfig


def mark_expert_params(module: nn.Module) -> None:
    """Tag parameters that differ across expert-parallel ranks (grads reduced over the
    expert-data-parallel group, norms summed over the expert-parallel group)."""
    for p in module.parameters():
        p.expert_parallel = True


class MoELayer(nn.Module):
    """Router plus this rank's experts.

    Args:
        config: the TransformerConfig (hidden size, init, TP settings of the experts).
        moe: the MoE settings.
        layer_id: global layer id (names the weights' init keys).
    """

    def __init__(self, config, moe: MoEConfig, layer_id: int) -> None:
        super().__init__()
        self.moe, self.layer_id = moe, layer_id
        self.ep_size = parallel_state.get_expert_model_parallel_world_size()
        if self.ep_size != moe.expert_model_parallel_size:
            raise ValueError(f"MoE layer {layer_id}: the expert-parallel group has "
                             f"{self.ep_size} ranks but --expert-model-parallel-size is "
                             f"{moe.expert_model_parallel_size}")
        first = parallel_state.get_expert_model_parallel_rank() * moe.num_local_experts
        with init_scope("router"):
            self.router = routing.Router(config.hidden_size, moe.num_experts,
                                         config.init_method)
        # Keyed whole-weight init for every expert, whatever the flags: without it the
        # expert-parallel ranks (data-parallel ranks with one seed) would draw equal experts.
        expert_config = dataclasses.replace(config, use_cpu_initialization=True)
        experts = []   # plain dense MLPs
        for e in range(first, first + moe.num_local_experts):
            with init_scope(f"experts.{e}"):   # global expert id: same weights in any layout
                experts.append(ParallelMLP(expert_config))
        self.experts = nn.ModuleList(experts)
        mark_expert_params(self.experts)
        self.stats = MoEStepStats(moe.num_experts)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """[s, b, h] -> [s, b, h]."""
        s, b, h = hidden.shape
        x = hidden.reshape(s * b, h)
        moe = self.moe
        probs, weights, experts = routing.topk_routing(self.router(x), moe.topk)
        aux = routing.load_balancing_loss(probs, experts)
        capacity = routing.expert_capacity(s * b, moe.num_experts, moe.topk,
                                           moe.capacity_factor(self.training), moe.min_capacity)
        keep = routing.capacity_keep_mask(weights, experts, moe.num_experts, capacity,
                                          moe.token_drop_policy)
        token = torch.arange(s * b, device=x.device).unsqueeze(1).expand_as(experts)[keep]
        expert, weight = experts[keep], weights[keep]
        order = token_exchange.sort_by_expert(expert)
        token, expert, weight = token[order], expert[order], weight[order]
        counts = torch.bincount(expert, minlength=moe.num_experts)
        y = self._run_experts(x[token], counts)                        # [n, h]
        out = torch.zeros_like(x).index_add(0, token, y * weight.unsqueeze(1).to(y.dtype))
        if self.training and torch.is_grad_enabled():
            # recompute runs the forward twice; only the pass that builds the graph counts
            self.stats.add(aux, routing.expert_counts(experts, moe.num_experts),
                           int(keep.numel() - keep.sum()))
            if moe.aux_loss_coeff > 0:
                out = attach_aux_loss(out, aux * moe.aux_loss_coeff)
        return out.view(s, b, h)

    def _run_local(self, tokens: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """Rows grouped by local expert ([n, h], ``counts`` per expert) -> outputs [n, h]."""
        pieces = torch.split(tokens, counts)
        return torch.cat([expert(piece) for expert, piece in zip(self.experts, pieces)])

    def _run_experts(self, tokens: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Tokens sorted by global expert ([n, h], ``counts`` [E]) -> their outputs [n, h]."""
        if self.ep_size == 1:
            return self._run_local(tokens, counts.tolist())
        group = parallel_state.get_expert_model_parallel_group()
        received = token_exchange.exchange_counts(counts, group, self.ep_size)  # [ep, E_l]
        send = counts.view(self.ep_size, -1).sum(dim=1).tolist()
        recv = received.sum(dim=1).tolist()
        arrived = token_exchange.all_to_all(tokens, group, send, recv)
        perm = token_exchange.source_major_to_expert_major(received).to(tokens.device)
        out = self._run_local(arrived[perm], received.sum(dim=0).tolist())
        back = torch.empty_like(perm)
        back[perm] = torch.arange(perm.numel(), device=perm.device)
        return token_exchange.all_to_all(out[back], group, recv, send)
