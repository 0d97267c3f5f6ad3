"""Gather / combine / mask ops of random-LTD on the PyTorch reference path."""
import pytest
import torch

from megatron.data_efficiency.random_ltd.ops import (combine_tokens, gather_attention_mask,
                                                     gather_tokens)
from megatron.data_efficiency.random_ltd.plan import TokenDropPlan


def _idx(b, s, r, layer=1, seed=3):
    return TokenDropPlan(frozenset({layer}), r, seed, 0, 0, 0).kept_indices(layer, b, s, "cpu")


def _index_select_gather(x, idx):
    """Reference: per sample, x[:, i][idx[i]] stacked on the batch dimension."""
    return torch.stack([x[:, i].index_select(0, idx[i]) for i in range(idx.size(0))], dim=1)


def test_identity_layer_returns_input():
    x = torch.randn(16, 3, 8)
    idx = _idx(3, 16, 5)
    out = combine_tokens(x, gather_tokens(x, idx, impl="torch"), idx, impl="torch")
    assert torch.equal(out, x)


def test_gather_matches_index_select_and_combine_replaces_rows():
    x = torch.randn(10, 2, 4)
    idx = _idx(2, 10, 4)
    part = gather_tokens(x, idx, impl="torch")
    assert torch.equal(part, _index_select_gather(x, idx))
    new = torch.randn(4, 2, 4)
    out = combine_tokens(x, new, idx, impl="torch")
    for i in range(2):
        kept = set(idx[i].tolist())
        for pos in range(10):
            want = new[idx[i].tolist().index(pos), i] if pos in kept else x[pos, i]
            assert torch.equal(out[pos, i], want)


def test_gradients_equal_index_select_reference():
    torch.manual_seed(0)
    s, b, h, r = 12, 3, 5, 7
    idx = _idx(b, s, r)
    weight = torch.randn(h, h)
    x = torch.randn(s, b, h, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    grad_out = torch.randn(s, b, h)

    out = combine_tokens(x, torch.tanh(gather_tokens(x, idx, impl="torch") @ weight), idx,
                         impl="torch")
    out.backward(grad_out)

    # Reference: the layer acts on index_select rows; the others pass through.
    part = torch.tanh(_index_select_gather(x_ref, idx) @ weight)
    cols = []
    for i in range(b):
        mask = torch.zeros(s, dtype=torch.bool)
        mask[idx[i]] = True
        col = x_ref[:, i].clone()
        col = col.masked_scatter(mask[:, None].expand(s, h), part[:, i])
        cols.append(col)
    ref = torch.stack(cols, dim=1)
    ref.backward(grad_out)
    assert torch.allclose(out, ref)
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-6)


def test_gradcheck_float64():
    s, b, h, r = 6, 2, 3, 3
    idx = _idx(b, s, r)
    x = torch.randn(s, b, h, dtype=torch.float64, requires_grad=True)
    p = torch.randn(r, b, h, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: gather_tokens(t, idx, impl="torch"), (x,))
    assert torch.autograd.gradcheck(lambda f, q: combine_tokens(f, q, idx, impl="torch"), (x, p))


def test_gather_rope_shaped_and_broadcast_batch():
    rope = torch.randn(9, 2, 1, 4)
    idx = _idx(2, 9, 4)
    out = gather_tokens(rope, idx, impl="torch")
    assert out.shape == (4, 2, 1, 4)
    assert torch.equal(out[:, 1], rope[idx[1], 1])
    shared = torch.randn(9, 1, 1, 4)
    out = gather_tokens(shared, idx)
    assert out.shape == (4, 2, 1, 4) and torch.equal(out[:, 0], shared[idx[0], 0])


def test_causal_none_mask_stays_none():
    assert gather_attention_mask(None, _idx(2, 8, 3)) is None


def test_causal_mask_gather_stays_causal():
    s = 8
    causal = torch.ones(s, s, dtype=torch.bool).triu(1)[None, None]
    idx = _idx(3, s, 5)
    got = gather_attention_mask(causal, idx)
    assert got.shape == (3, 1, 5, 5)
    want = torch.ones(5, 5, dtype=torch.bool).triu(1)
    assert all(torch.equal(got[i, 0], want) for i in range(3))


def test_document_reset_and_padding_masks():
    s, b, r = 10, 2, 6
    pos = torch.arange(s)
    doc = torch.tensor([[0] * 4 + [1] * 6, [0] * 7 + [1] * 3])  # [b, s]
    reset = (pos[None, :, None] < pos[None, None, :]) | (doc[:, :, None] != doc[:, None, :])
    valid = torch.tensor([[1] * 8 + [0] * 2, [1] * 10]).bool()
    pad = ~(valid[:, :, None] & valid[:, None, :])
    idx = _idx(b, s, r)
    for mask in (reset, pad):
        got = gather_attention_mask(mask[:, None], idx)
        for i in range(b):
            want = mask[i][idx[i]][:, idx[i]]
            assert torch.equal(got[i, 0], want)


def test_bad_shapes_are_named():
    x = torch.randn(4, 2, 3)
    with pytest.raises(ValueError, match="gather_tokens"):
        gather_tokens(x, torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="combine_tokens"):
        combine_tokens(x, torch.randn(3, 2, 3), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="MEGATRON_RANDOM_LTD_IMPL"):
        gather_tokens(x, torch.zeros(2, 2, dtype=torch.long), impl="cuda")
