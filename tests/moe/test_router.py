"""Routing maths: top-k weights (gradcheck), the load-balancing loss formula, capacity."""
import math

import pytest
import torch

from megatron.model.moe import router as routing


def test_topk_weights_gradcheck():
    torch.manual_seed(0)
    logits = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    for k in (1, 2):
        def weights(lg, k=k):
            return routing.topk_routing(lg, k)[1]
        assert torch.autograd.gradcheck(weights, (logits,))


def test_topk_weights_values():
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0]])
    probs, w1, e1 = routing.topk_routing(logits, 1)
    assert e1.tolist() == [[2]]
    assert torch.allclose(w1, probs[:, 2:3])             # top-1: the probability itself
    _, w2, e2 = routing.topk_routing(logits, 2)
    assert e2.tolist() == [[2, 1]]
    p = torch.softmax(torch.tensor([2.0, 1.0]), 0)       # top-2: renormalised pair
    assert torch.allclose(w2[0], p)


def test_load_balancing_loss_hand_made():
    # 4 tokens, 2 experts; top-1 choices 0, 0, 0, 1
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.7, 0.3], [0.2, 0.8]])
    experts = torch.tensor([[0], [0], [0], [1]])
    # Switch: E * sum_e f_e * P_e, f = (3/4, 1/4), P = mean probs = (0.6, 0.4)
    expected = 2 * (0.75 * 0.6 + 0.25 * 0.4)
    assert routing.load_balancing_loss(probs, experts).item() == pytest.approx(expected)
    # top-2 with every expert chosen by every token: f = (1/2, 1/2)
    both = torch.tensor([[0, 1]] * 4)
    assert routing.load_balancing_loss(probs, both).item() == pytest.approx(
        2 * (0.5 * 0.6 + 0.5 * 0.4))


def test_balanced_routing_gives_one():
    probs = torch.full((8, 4), 0.25)
    experts = torch.arange(8).remainder(4).unsqueeze(1)
    assert routing.load_balancing_loss(probs, experts).item() == pytest.approx(1.0)


def test_capacity_formula():
    assert routing.expert_capacity(100, 8, 1, 1.0, 4) == math.ceil(100 / 8)
    assert routing.expert_capacity(100, 8, 2, 1.5, 4) == math.ceil(100 * 2 / 8 * 1.5)
    assert routing.expert_capacity(8, 8, 1, 1.0, 4) == 4      # min capacity
    assert routing.expert_capacity(100, 8, 1, None, 4) is None


def test_position_policy_keeps_first_tokens_and_first_choices():
    experts = torch.tensor([[0, 1], [0, 1], [1, 0], [0, 1]])
    weights = torch.tensor([[0.6, 0.4], [0.7, 0.3], [0.9, 0.1], [0.8, 0.2]])
    keep = routing.capacity_keep_mask(weights, experts, 2, 2, "position")
    # expert 0: first choices of tokens 0, 1 (token 3's first choice and token 2's
    # second choice are dropped); expert 1: first choice of token 2, then token 0's second
    assert keep.tolist() == [[True, True], [True, False], [True, False], [False, False]]


def test_probs_policy_keeps_highest_weights():
    experts = torch.tensor([[0], [0], [0], [1]])
    weights = torch.tensor([[0.5], [0.9], [0.7], [0.6]])
    keep = routing.capacity_keep_mask(weights, experts, 2, 2, "probs")
    assert keep.squeeze(1).tolist() == [False, True, True, True]


def test_no_capacity_keeps_everything():
    experts = torch.zeros(6, 2, dtype=torch.long)
    keep = routing.capacity_keep_mask(torch.rand(6, 2), experts, 2, None, "probs")
    assert bool(keep.all())
