"""MoE inside GPTModel: the MLP slot of the configured layers, random-LTD's seam unchanged
(dropped tokens skip the whole layer, router included), recompute counted once."""
import torch

from megatron.data_efficiency.random_ltd.plan import TokenDropPlan
from megatron.model.gpt_model import GPTModel
from megatron.model.moe.layer import MoELayer
from megatron.model.mlp import ParallelMLP

from tests.moe.helpers import model_config, moe_config

B, S = 2, 16


def _model(**kw) -> GPTModel:
    torch.manual_seed(0)
    return GPTModel(model_config(moe_config(topk=2, capacity=None), **kw))


def _batch():
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 64, (B, S), generator=g)
    return tokens, torch.arange(S).expand(B, S), torch.randint(0, 64, (B, S), generator=g)


def test_moe_layers_sit_in_the_mlp_slot_of_every_other_layer():
    layers = _model().transformer.layers
    assert [isinstance(layer.mlp, MoELayer) for layer in layers] == [True, False, True, False]
    assert all(isinstance(layer.mlp, ParallelMLP) for layer in layers[1::2])


def test_random_ltd_routes_only_kept_tokens():
    model = _model()
    plan = TokenDropPlan(layer_ids=frozenset({2}), kept_length=6, seed=3, iteration=0,
                         microbatch=0, dp_rank=0)
    tokens, pos, labels = _batch()
    model(tokens, pos, None, labels=labels, token_drop_plan=plan).mean().backward()
    stats = {layer.layer_id: layer.mlp.stats for layer in model.transformer.layers[::2]}
    assert stats[0].tokens_per_expert.sum().item() == B * S * 2     # full layer, top-2
    assert stats[2].tokens_per_expert.sum().item() == B * 6 * 2     # only the kept tokens


def test_full_recompute_gives_same_grads_and_counts_once():
    plain, recompute = _model(), _model(recompute_granularity="full",
                                        recompute_method="uniform", recompute_num_layers=2)
    tokens, pos, labels = _batch()
    for m in (plain, recompute):
        m(tokens, pos, None, labels=labels).mean().backward()
    for (name, p), q in zip(plain.named_parameters(), recompute.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    first = recompute.transformer.layers[0].mlp.stats
    assert first.forwards == 1 and first.tokens_per_expert.sum().item() == B * S * 2
