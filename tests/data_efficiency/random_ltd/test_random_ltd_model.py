"""Random-LTD through the transformer's layer loop (megatron/model/transformer.py).

A dropping layer must equal the same layer run on only the kept tokens, with their real
positions and a mask built for them; eval never drops; TP2 matches TP1.
"""
import pytest
import torch

from megatron.data_efficiency.random_ltd.plan import TokenDropPlan
from megatron.model.config import TransformerConfig
from megatron.model.rotary import RotaryEmbedding
from megatron.model.transformer import ParallelTransformer

S, B, H, HEADS = 12, 3, 16, 2


def _config(num_layers=1, rope=True, **kw):
    return TransformerConfig(num_layers=num_layers, hidden_size=H, num_attention_heads=HEADS,
                             padded_vocab_size=32, max_position_embeddings=64,
                             position_embedding_type="rope" if rope else "learned_absolute",
                             hidden_dropout=0.0, attention_dropout=0.0,
                             use_cpu_initialization=True, **kw)


def _model(config, seed=0):
    torch.manual_seed(seed)
    return ParallelTransformer(config, pre_process=True, post_process=False).train()


def _batch():
    """Hidden states, document ids, position ids (reset per document) and validity."""
    torch.manual_seed(1)
    hidden = torch.randn(S, B, H)
    doc = torch.tensor([[0] * 5 + [1] * 7, [0] * 9 + [1] * 3, [0] * 12])  # [b, s]
    pos = torch.stack([torch.cat([torch.arange(int((d == k).sum())) for k in d.unique()])
                       for d in doc])  # [b, s] positions restart at each document
    valid = torch.tensor([[1] * 12, [1] * 8 + [0] * 4, [1] * 10 + [0] * 2]).bool()
    return hidden, doc, pos, valid


def _mask(kind, doc, valid, keep):
    """The bool [n, 1, k, k] mask of `kind` for the tokens `keep` [n, k] (True = masked)."""
    if kind == "causal":
        return None
    d = torch.gather(doc, 1, keep)
    v = torch.gather(valid, 1, keep)
    if kind == "doc_reset":
        m = (keep[:, :, None] < keep[:, None, :]) | (d[:, :, None] != d[:, None, :])
    else:  # padding (bidirectional, BERT-style)
        m = ~(v[:, :, None] & v[:, None, :])
    return m[:, None]


@pytest.mark.parametrize("kind,rope", [("causal", True), ("causal", False),
                                       ("doc_reset", True), ("padding", True),
                                       ("padding", False)])
def test_dropping_layer_equals_layer_on_kept_tokens(kind, rope):
    model = _model(_config(rope=rope))
    hidden, doc, pos, valid = _batch()
    rotary = RotaryEmbedding(H // HEADS) if rope else None
    full_keep = torch.arange(S).expand(B, S)
    plan = TokenDropPlan(frozenset({0}), 5, 11, 2, 0, 0)
    out = model(hidden, _mask(kind, doc, valid, full_keep),
                rotary(pos) if rope else None, token_drop_plan=plan)

    idx = plan.kept_indices(0, B, S, "cpu")
    layer = model.layers[0]
    for i in range(B):
        keep = idx[i:i + 1]  # [1, r]
        ref = layer(hidden[keep[0], i:i + 1], _mask(kind, doc[i:i + 1], valid[i:i + 1], keep),
                    rotary(pos[i:i + 1, keep[0]]) if rope else None)  # [r, 1, h]
        torch.testing.assert_close(out[keep[0], i], ref[:, 0], rtol=1e-5, atol=1e-5)
        dropped = torch.ones(S, dtype=torch.bool)
        dropped[keep[0]] = False
        assert torch.equal(out[dropped, i], hidden[dropped, i])


def test_eval_mode_never_drops():
    model = _model(_config(num_layers=3))
    hidden, doc, pos, _ = _batch()
    rope = RotaryEmbedding(H // HEADS)(pos)
    plan = TokenDropPlan(frozenset({1}), 4, 11, 0, 0, 0)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(hidden, None, rope, token_drop_plan=plan),
                           model(hidden, None, rope))
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(hidden, None, rope, token_drop_plan=plan),
                               model(hidden, None, rope))


def _out_and_grads(config, plan, seed=0):
    model = _model(config, seed)
    hidden, _, pos, _ = _batch()
    hidden.requires_grad_(True)
    out = model(hidden, None, RotaryEmbedding(H // HEADS)(pos), token_drop_plan=plan)
    weight = torch.linspace(-1, 1, out.numel()).view_as(out)
    (out * weight).sum().backward()
    return out.detach(), hidden.grad


def test_full_recompute_matches_plain_run():
    plan = TokenDropPlan(frozenset({0, 2}), 7, 5, 1, 1, 0)
    plain = _out_and_grads(_config(num_layers=3), plan)
    recomputed = _out_and_grads(_config(num_layers=3, recompute_granularity="full",
                                        recompute_method="uniform", recompute_num_layers=2),
                                plan)
    for a, b in zip(plain, recomputed):
        assert torch.equal(a, b)


def _tp_worker(rank, world_size, plan):
    from megatron.core import parallel_state, tensor_parallel
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=world_size)
    tensor_parallel.model_parallel_seed(1234)
    try:
        return _out_and_grads(_config(num_layers=3), plan)
    finally:
        parallel_state.destroy_model_parallel()


def test_tensor_parallel_2_matches_1():
    from tests.dist_utils import run_distributed
    plan = TokenDropPlan(frozenset({1, 2}), 6, 3, 4, 0, 0)
    ref_out, ref_grad = _out_and_grads(_config(num_layers=3), plan)
    results = run_distributed(_tp_worker, 2, plan)
    for out, grad in results:
        torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rope", [True, False])
def test_gpt_model_eval_equals_model_without_random_ltd(rope):
    from megatron.model.gpt_model import GPTModel
    torch.manual_seed(0)
    model = GPTModel(_config(num_layers=4, rope=rope))
    tokens = torch.randint(0, 32, (2, S))
    labels = torch.randint(0, 32, (2, S))
    pos = torch.arange(S).expand(2, S)
    plan = TokenDropPlan(frozenset({1, 2}), 5, 11, 0, 0, 0)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(tokens, pos, None, labels, token_drop_plan=plan),
                           model(tokens, pos, None, labels))
    model.train()
    loss = model(tokens, pos, None, labels, token_drop_plan=plan)
    assert loss.shape == (2, S) and torch.isfinite(loss).all()
    loss.mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
