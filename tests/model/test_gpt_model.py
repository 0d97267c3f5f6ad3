"""GPTModel in one process: shapes, loss, tied weights, rope positions, document masks,
activation recompute and the random-LTD seam of the layer loop."""
import pytest
import torch
import torch.nn.functional as F

from megatron.core import tensor_parallel as tp
from megatron.model import GPTModel, TransformerConfig
from megatron.utils import get_ltor_masks_and_position_ids

V, S, B = 64, 16, 2


def _config(**kw):
    base = dict(num_layers=2, hidden_size=32, num_attention_heads=4, padded_vocab_size=V,
                max_position_embeddings=32, use_cpu_initialization=True,
                hidden_dropout=0.0, attention_dropout=0.0)
    base.update(kw)
    return TransformerConfig(**base)


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    return GPTModel(_config(**kw))


def _batch(seed=1):
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, V, (B, S), generator=gen)
    return tokens, torch.arange(S).expand(B, S)


def test_config_validation():
    with pytest.raises(ValueError, match="--hidden-size 30 is not divisible"):
        _config(hidden_size=30)
    with pytest.raises(ValueError, match="--recompute-method"):
        _config(recompute_granularity="full")
    with pytest.raises(ValueError, match="position-embedding-type"):
        _config(position_embedding_type="alibi")
    cfg = _config()
    assert cfg.ffn_hidden_size == 128 and cfg.kv_channels == 8


@pytest.mark.parametrize("pe", ["learned_absolute", "rope"])
def test_shapes_loss_and_tied_logits(pe):
    model = _model(position_embedding_type=pe).eval()
    tokens, pos = _batch()
    logits = model(tokens, pos, None)
    loss = model(tokens, pos, None, labels=tokens)
    assert logits.shape == (B, S, V) and loss.shape == (B, S) and loss.dtype == torch.float32
    ref = F.cross_entropy(logits.reshape(-1, V), tokens.reshape(-1), reduction="none")
    assert torch.allclose(loss, ref.view(B, S), atol=1e-5)
    # tied: logits are the final hidden states times the input embedding table
    hidden = model.transformer(model.embedding(tokens, pos), None,
                               None if model.rotary_pos_emb is None else model.rotary_pos_emb(pos))
    weight = model.embedding.word_embeddings.weight
    assert torch.allclose(logits, F.linear(hidden, weight).transpose(0, 1), atol=1e-5)
    assert model.output_layer is None and model.word_embeddings is None
    model.train()
    model(tokens, pos, None, labels=tokens).mean().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0
    # no post-process: hidden states [s, b, h]
    torch.manual_seed(0)
    first = GPTModel(_config(position_embedding_type=pe), post_process=False)
    assert first(tokens, pos, None).shape == (S, B, 32)


def test_untied_output_layer():
    model = _model(untie_embeddings_and_output_weights=True)
    assert model.output_layer is not None
    assert model.output_layer.weight is not model.embedding.word_embeddings.weight
    tokens, pos = _batch()
    model(tokens, pos, None, labels=tokens).sum().backward()
    assert model.output_layer.weight.grad.abs().sum() > 0


def test_rope_uses_position_ids():
    # a large init makes attention peaked, so positions matter visibly
    model = _model(position_embedding_type="rope", init_method_std=0.5).eval()
    tokens, pos = _batch()
    base = model(tokens, pos, None)
    # rope is relative: a constant shift of every position leaves the output unchanged...
    assert torch.allclose(model(tokens, pos + 7, None), base, atol=1e-3)
    # ...while a non-uniform change of the positions changes it
    odd = pos.clone()
    odd[:, S // 2:] += 5
    changed = model(tokens, odd, None)
    assert torch.allclose(changed[:, :S // 2], base[:, :S // 2], atol=1e-3)  # causal
    assert (changed[:, S // 2:] - base[:, S // 2:]).abs().max() > 0.1


def test_document_masks_reference_values():
    data = torch.tensor([[5, 1, 0, 3, 4, 0, 7]])
    mask, loss_mask, pos = get_ltor_masks_and_position_ids(data, 0, True, True, True)
    assert pos.tolist() == [[0, 1, 2, 0, 1, 2, 0]]
    assert loss_mask.tolist() == [[1, 1, 0, 1, 1, 0, 1]]
    allowed = (~mask[0, 0]).int().tolist()
    assert allowed[4] == [0, 0, 0, 1, 1, 0, 0] and allowed[6] == [0, 0, 0, 0, 0, 0, 1]
    assert allowed[2] == [1, 1, 1, 0, 0, 0, 0]
    mask, _, pos = get_ltor_masks_and_position_ids(data, 0, False, False, False)
    assert mask is None and pos.tolist() == [list(range(7))]


@pytest.mark.parametrize("pe", ["learned_absolute", "rope"])
def test_document_reset_equals_separate_documents(pe):
    model = _model(position_embedding_type=pe).eval()
    tokens, _ = _batch()
    eod = 0
    tokens[:, 5] = eod  # documents: [0..5] and [6..15]
    mask, _, pos = get_ltor_masks_and_position_ids(tokens, eod, True, True, False)
    full = model(tokens, pos, mask)
    second = tokens[:, 6:]
    alone = model(second, torch.arange(S - 6).expand(B, S - 6), None)
    assert torch.allclose(full[:, 6:], alone, atol=1e-4)
    first_alone = model(tokens[:, :6], torch.arange(6).expand(B, 6), None)
    assert torch.allclose(full[:, :6], first_alone, atol=1e-4)
    # without the document mask the second document sees the first: rows differ
    _, _, pos_nomask = get_ltor_masks_and_position_ids(tokens, eod, True, False, False)
    leaky = model(tokens, pos_nomask, None)
    assert not torch.allclose(leaky[:, 6:], alone, atol=1e-3)


def _loss_and_grads(model, tokens, pos):
    tp.model_parallel_seed(123)
    model.zero_grad()
    loss = model(tokens, pos, None, labels=tokens)
    loss.mean().backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("recompute", [dict(recompute_granularity="selective"),
                                       dict(recompute_granularity="full",
                                            recompute_method="uniform", recompute_num_layers=1),
                                       dict(recompute_granularity="full",
                                            recompute_method="block", recompute_num_layers=1)])
def test_recompute_same_loss_and_grads(recompute):
    drop = dict(hidden_dropout=0.2, attention_dropout=0.2, position_embedding_type="rope")
    tokens, pos = _batch()
    ref_loss, ref_grads = _loss_and_grads(_model(**drop), tokens, pos)
    loss, grads = _loss_and_grads(_model(**drop, **recompute), tokens, pos)
    tp.get_rng_tracker().reset()
    assert torch.allclose(loss, ref_loss, atol=1e-6)
    for name, g in ref_grads.items():
        assert torch.allclose(grads[name], g, atol=1e-6), name


class _FixedPlan:
    """Test-local plan: layer 1 keeps fixed positions."""

    kept_length = 6

    def __init__(self):
        self.idx = torch.tensor([[0, 2, 3, 7, 8, 15], [1, 4, 5, 6, 10, 12]])

    def drops(self, layer_id):
        return layer_id == 1

    def kept_indices(self, layer_id, batch_size, seq_length, device):
        return self.idx.to(device)


def _gather(x, idx):       # x [s, b, ...], idx [b, r] -> [r, b, ...]
    return torch.stack([x[:, i].index_select(0, idx[i]) for i in range(idx.size(0))], dim=1)


def _combine(full, part, idx):
    out = full.clone()
    for i in range(idx.size(0)):
        out[:, i] = out[:, i].index_copy(0, idx[i], part[:, i])
    return out


def test_random_ltd_seam_in_layer_loop():
    model = _model(position_embedding_type="rope", num_layers=3)
    tokens, pos = _batch()
    plan = _FixedPlan()
    hidden = model.embedding(tokens, pos)
    rope = model.rotary_pos_emb(pos)
    out = model.transformer(hidden, None, rope, plan)
    l0, l1, l2 = model.transformer.layers
    h = l0(hidden, None, rope)
    h = _combine(h, l1(_gather(h, plan.idx), None, _gather(rope, plan.idx)), plan.idx)
    ref = model.transformer.final_layernorm(l2(h, None, rope))
    assert torch.allclose(out, ref, atol=1e-5)
    no_drop = model.transformer(hidden, None, rope, None)
    assert not torch.allclose(out, no_drop, atol=1e-4)
    model.eval()  # eval never drops
    assert torch.allclose(model.transformer(hidden, None, rope, plan),
                          model.transformer(hidden, None, rope, None))
