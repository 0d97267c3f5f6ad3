"""The MoE layer in one process: against a per-token reference, the dense MLP, the
auxiliary loss's gradient, and random-LTD (only kept tokens are routed)."""
import torch

from megatron.model.moe import aux_loss
from megatron.model.moe.layer import MoELayer
from megatron.model.mlp import ParallelMLP

from tests.moe.helpers import model_config, moe_config


def _layer(**kw) -> MoELayer:
    moe = moe_config(**kw)
    torch.manual_seed(0)
    return MoELayer(model_config(moe), moe, layer_id=0)


def _reference(layer: MoELayer, hidden: torch.Tensor) -> torch.Tensor:
    """Token by token: top-k experts, capacity in the layer's priority order."""
    from megatron.model.moe import router as routing
    s, b, h = hidden.shape
    x = hidden.reshape(-1, h)
    probs, weights, experts = routing.topk_routing(layer.router(x), layer.moe.topk)
    cap = routing.expert_capacity(s * b, layer.moe.num_experts, layer.moe.topk,
                                  layer.moe.train_capacity_factor, layer.moe.min_capacity)
    taken = [0] * layer.moe.num_experts
    keep = torch.zeros_like(experts, dtype=torch.bool)
    for c in range(experts.shape[1]):            # position policy: choice, then token
        for t in range(x.shape[0]):
            e = int(experts[t, c])
            if cap is None or taken[e] < cap:
                keep[t, c], taken[e] = True, taken[e] + 1
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for c in range(experts.shape[1]):
            if keep[t, c]:
                e = int(experts[t, c])
                out[t] += weights[t, c] * layer.experts[e](x[t:t + 1])[0]
    return out.view(s, b, h), keep


def test_matches_per_token_reference_with_drops():
    layer = _layer(topk=2, capacity=0.5, policy="position")
    hidden = torch.randn(6, 2, 16)
    ref, keep = _reference(layer, hidden)
    assert not bool(keep.all()), "capacity 0.5 must drop some assignments"
    dropped = (~keep).all(dim=1)
    out = layer(hidden)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    # a token with every assignment dropped passes through: the MoE adds nothing
    assert torch.equal(out.reshape(-1, 16)[dropped], torch.zeros(int(dropped.sum()), 16))


def test_no_drop_mode_matches_reference():
    layer = _layer(topk=2, capacity=None)
    hidden = torch.randn(5, 3, 16)
    torch.testing.assert_close(layer(hidden), _reference(layer, hidden)[0], rtol=1e-5,
                               atol=1e-6)
    assert layer.stats.dropped == 0


def test_one_expert_equals_dense_mlp():
    layer = _layer(num_experts=1, capacity=None, coeff=0.0)
    dense = ParallelMLP(model_config())
    dense.load_state_dict(layer.experts[0].state_dict())
    hidden = torch.randn(4, 2, 16)
    torch.testing.assert_close(layer(hidden), dense(hidden))


def test_aux_loss_gradient_is_coeff_times_scale():
    from megatron.model.moe import router as routing
    coeff, scale = 0.3, 0.25
    with_aux, without = _layer(coeff=coeff), _layer(coeff=0.0)
    without.load_state_dict(with_aux.state_dict())
    hidden = torch.randn(4, 2, 16)
    aux_loss.set_aux_loss_grad_scale(scale)
    try:
        with_aux(hidden).sum().backward()
    finally:
        aux_loss.set_aux_loss_grad_scale(1.0)
    without(hidden).sum().backward()
    x = hidden.reshape(-1, 16)
    probs, _, experts = routing.topk_routing(without.router(x), 1)
    (g_aux,) = torch.autograd.grad(routing.load_balancing_loss(probs, experts),
                                   without.router.weight)
    torch.testing.assert_close(with_aux.router.weight.grad,
                               without.router.weight.grad + coeff * scale * g_aux)


def test_stats_count_assignments_and_drops():
    layer = _layer(topk=2, capacity=0.5)
    layer(torch.randn(4, 2, 16))
    assert layer.stats.tokens_per_expert.sum().item() == 8 * 2
    assert layer.stats.forwards == 1 and layer.stats.dropped > 0
    with torch.no_grad():   # eval / first recompute pass: not counted
        layer(torch.randn(4, 2, 16))
    assert layer.stats.forwards == 1
