"""BertModel: shapes, MLM loss, padding and bidirectionality, and TP2 (+ sequence
parallel) against TP1."""
import torch
import torch.distributed as dist
import torch.nn.functional as F

from megatron.core import parallel_state as ps
from megatron.model import BertModel, Float16Module, TransformerConfig

V, S, B, SEED = 64, 16, 2, 99


def _config(**kw):
    return TransformerConfig(num_layers=2, hidden_size=32, num_attention_heads=4,
                             padded_vocab_size=V, max_position_embeddings=S,
                             use_cpu_initialization=True, hidden_dropout=0.0,
                             attention_dropout=0.0, **kw)


def _batch():
    gen = torch.Generator().manual_seed(3)
    tokens = torch.randint(1, V, (B, S), generator=gen)
    labels = torch.randint(0, V, (B, S), generator=gen)
    types = (torch.arange(S) >= S // 2).long().expand(B, S)
    pad = torch.ones(B, S, dtype=torch.long)
    pad[1, 11:] = 0
    return tokens, labels, types, pad


def _model(**kw):
    torch.manual_seed(SEED)
    return BertModel(_config(**kw))


def test_shapes_and_loss():
    model = _model().eval()
    tokens, labels, types, pad = _batch()
    logits, binary = model(tokens, pad, types)
    loss, binary2 = model(tokens, pad, types, lm_labels=labels)
    assert logits.shape == (B, S, V) and binary.shape == (B, 2) and loss.shape == (B, S)
    ref = F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), reduction="none")
    assert torch.allclose(loss, ref.view(B, S), atol=1e-5) and torch.equal(binary, binary2)
    no_nsp = BertModel(_config(), add_binary_head=False)
    assert no_nsp(tokens, pad, types)[1] is None
    half = Float16Module(_model(), torch.bfloat16)
    loss16, _ = half(tokens, pad, types, lm_labels=labels)
    assert loss16.dtype == torch.float32 and torch.isfinite(loss16).all()


def test_padding_and_bidirectional_attention():
    model = _model().eval()
    tokens, labels, types, pad = _batch()
    base, _ = model(tokens, pad, types, lm_labels=labels)
    changed = tokens.clone()
    changed[1, 12:] = 5  # padding content is invisible to real tokens
    out, _ = model(changed, pad, types, lm_labels=labels)
    assert torch.allclose(out[1, :11], base[1, :11], atol=1e-5)
    later = tokens.clone()
    later[0, S - 1] = (later[0, S - 1] + 1) % V  # a later token changes earlier outputs
    out, _ = model(later, pad, types, lm_labels=labels)
    assert not torch.allclose(out[0, :4], base[0, :4], atol=1e-6)


def _grads(model):
    tokens, labels, types, pad = _batch()
    loss, binary = model(tokens, pad, types, lm_labels=labels)
    (loss.sum() + binary.square().sum()).backward()
    return loss.detach(), binary.detach()


def _full_grad(p):
    group = ps.get_tensor_model_parallel_group()
    grad = p.grad.clone()
    if getattr(p, "sequence_parallel", False):
        dist.all_reduce(grad, group=group)
        return grad
    if not getattr(p, "tensor_model_parallel", False):
        return grad
    parts = [torch.empty_like(grad) for _ in range(2)]
    dist.all_gather(parts, grad, group=group)
    return torch.cat(parts, dim=p.partition_dim)


def _tp2_worker(rank, world_size):
    ps.initialize_model_parallel(2, 1)
    out = []
    for sp in (False, True):
        model = _model(sequence_parallel=sp)
        loss, binary = _grads(model)
        out.append((loss.numpy(), binary.numpy(),
                    {n: _full_grad(p).numpy() for n, p in model.named_parameters()}))
    return out


def two_rank_jobs(tmp_path_factory) -> dict:
    """This module's job in the session's shared 2-rank spawn (tests/conftest.py)."""
    return {"bert_tp2": (_tp2_worker,)}


def test_tp2_and_sequence_parallel_match_tp1(two_rank_spawn):
    ref = _model()
    ref_loss, ref_binary = _grads(ref)
    for per_rank in two_rank_spawn["bert_tp2"]:
        for loss, binary, grads in per_rank:
            assert torch.allclose(torch.from_numpy(loss), ref_loss, atol=1e-5)
            assert torch.allclose(torch.from_numpy(binary), ref_binary, atol=1e-5)
            for name, p in ref.named_parameters():
                assert torch.allclose(torch.from_numpy(grads[name]), p.grad, atol=1e-5,
                                      rtol=1e-4), name
