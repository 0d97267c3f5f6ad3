"""GPTModel under TP2 (use_cpu_initialization) equals the TP1 model: loss and gathered
grads (GPT-2- and Llama-shaped: RMSNorm, grouped-query attention with one query group per
rank, no bias anywhere); and a PP2 split (manual send/recv) with the shared word embedding
equals it too. Query groups that do not divide by TP are refused."""
import torch
import torch.distributed as dist

from megatron.core import parallel_state as ps
from megatron.initialize import set_seeds
from megatron.errors import BadConfigError
from megatron.model import GPTModel, TransformerConfig
from tests.parallel.gpt_harness import LLAMA_SHAPE

V, S, B, SEED = 64, 16, 2, 1234
VARIANTS = [dict(position_embedding_type="learned_absolute"),
            dict(position_embedding_type="rope", swiglu=True),
            dict(position_embedding_type="rope", untie_embeddings_and_output_weights=True),
            dict(position_embedding_type="rope", sequence_parallel=True),
            dict(recompute_granularity="full", recompute_method="uniform",
                 recompute_num_layers=1, distribute_saved_activations=True),
            dict(LLAMA_SHAPE), dict(LLAMA_SHAPE, sequence_parallel=True)]


def _config(**kw):
    return TransformerConfig(num_layers=2, hidden_size=32, num_attention_heads=4,
                             padded_vocab_size=V, max_position_embeddings=S,
                             use_cpu_initialization=True, hidden_dropout=0.0,
                             attention_dropout=0.0, **kw)


def _batch():
    gen = torch.Generator().manual_seed(7)
    tokens = torch.randint(0, V, (B, S), generator=gen)
    labels = torch.randint(0, V, (B, S), generator=gen)
    return tokens, labels, torch.arange(S).expand(B, S)


def _run(model):
    tokens, labels, pos = _batch()
    loss = model(tokens, pos, None, labels=labels)
    # weight each token differently so the grads check the per-token losses
    (loss * torch.linspace(0.5, 1.5, B * S).view(B, S)).sum().backward()
    return loss.detach()


def _gather_param(p):
    """Full TP1-layout grad from this rank's partition (handles partition_stride)."""
    group = ps.get_tensor_model_parallel_group()
    if getattr(p, "sequence_parallel", False):
        # replicated params that saw only this rank's tokens (finalize_model_grads' job)
        grad = p.grad.clone()
        dist.all_reduce(grad, group=group)
        return grad
    if not getattr(p, "tensor_model_parallel", False):
        return p.grad.clone()
    parts = [torch.empty_like(p.grad) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, p.grad.contiguous(), group=group)
    stride, dim = p.partition_stride, p.partition_dim
    pieces = [part.chunk(stride, dim=dim) for part in parts]
    return torch.cat([pieces[r][s] for s in range(stride) for r in range(len(parts))], dim=dim)


def _tp2_worker(rank, world_size):
    ps.initialize_model_parallel(2, 1)
    out = []
    for variant in VARIANTS:
        torch.manual_seed(SEED)
        model = GPTModel(_config(**variant))
        loss = _run(model)
        # numpy, not tensors: tensors cross the result queue as shared memory that dies
        # with the worker process
        out.append((loss.numpy(), {n: _gather_param(p).numpy()
                                   for n, p in model.named_parameters()}))
    try:
        GPTModel(_config(**dict(LLAMA_SHAPE, num_query_groups=1)))
        out.append("built")
    except BadConfigError as exc:
        out.append(str(exc))
    return out


def _both_worker(rank, world_size, state):
    """One spawn for both layouts: starting ranks is the slow part."""
    tp2 = _tp2_worker(rank, world_size)
    ps.destroy_model_parallel()
    return tp2, _pp2_worker(rank, world_size, state)


def two_rank_jobs(tmp_path_factory) -> dict:
    """This module's job in the session's shared 2-rank spawn (tests/conftest.py)."""
    torch.manual_seed(SEED)
    state = {k: v.clone() for k, v in GPTModel(_config()).state_dict().items()}
    return {"gpt_tp2_pp2": (_both_worker, state)}


def test_tp2_and_pp2_match_tp1(two_rank_spawn):
    both = two_rank_spawn["gpt_tp2_pp2"]
    _check_tp2([b[0] for b in both])
    _check_pp2([b[1] for b in both])


def _check_tp2(results):
    for rank in range(2):
        assert results[rank][-1] == ("--num-query-groups 1 is not divisible by "
                                     "--tensor-model-parallel-size 2 (each rank holds whole "
                                     "query groups)")
    for i, variant in enumerate(VARIANTS):
        torch.manual_seed(SEED)
        ref = GPTModel(_config(**variant))
        ref_loss = _run(ref)
        for rank in range(2):
            loss, grads = results[rank][i]
            if variant.get("add_bias_linear") is False:   # no bias under TP either
                assert not [n for n in grads if "bias" in n], variant
            assert torch.allclose(torch.from_numpy(loss), ref_loss, atol=1e-5), (variant, rank)
            for name, p in ref.named_parameters():
                assert torch.allclose(torch.from_numpy(grads[name]), p.grad, atol=1e-5,
                                      rtol=1e-4), (variant, name)


def _pp2_worker(rank, world_size, state):
    ps.initialize_model_parallel(1, 2)
    first, last = ps.is_pipeline_first_stage(), ps.is_pipeline_last_stage()
    set_seeds(SEED)  # torch seeded SEED + 100 * stage, as in training
    model = GPTModel(_config(), pre_process=first, post_process=last)
    shared = model.shared_embedding_weight()
    synced = torch.equal(shared, state["embedding.word_embeddings.weight"])
    for name, value in model.state_dict().items():  # keyed init: the TP1 model's weights
        src = name.replace("transformer.layers.0.", "transformer.layers.1.") if last else name
        src = "embedding.word_embeddings.weight" if name == "word_embeddings.weight" else src
        synced = synced and torch.equal(value, state[src])
    tokens, labels, pos = _batch()
    if first:
        hidden = model(tokens, pos, None)
        dist.send(hidden.detach().contiguous(), ps.get_pipeline_model_parallel_next_rank())
        grad = torch.empty_like(hidden)
        dist.recv(grad, ps.get_pipeline_model_parallel_prev_rank())
        hidden.backward(grad)
        loss = None
    else:
        recv = torch.empty(S, B, 32)
        dist.recv(recv, ps.get_pipeline_model_parallel_prev_rank())
        recv.requires_grad_()
        model.set_input_tensor(recv)
        loss = model(tokens, pos, None, labels=labels)
        (loss * torch.linspace(0.5, 1.5, B * S).view(B, S)).sum().backward()
        dist.send(recv.grad.contiguous(), ps.get_pipeline_model_parallel_next_rank())
        loss = loss.detach().numpy()
    # what finalize_model_grads does for the tied embedding
    shared_grad = shared.grad.clone()
    dist.all_reduce(shared_grad, group=ps.get_embedding_group())
    return synced, shared.shared_embedding, loss, shared_grad.numpy()


def _check_pp2(results):
    torch.manual_seed(SEED)
    ref = GPTModel(_config())
    ref_loss = _run(ref)
    # each stage builds exactly its part of ref (and the same tied embedding)
    (s0, m0, _, g0), (s1, m1, loss, g1) = results
    assert s0 and s1 and m0 and m1
    assert torch.allclose(torch.from_numpy(loss), ref_loss, atol=1e-5)
    ref_grad = ref.embedding.word_embeddings.weight.grad
    for g in (g0, g1):
        assert torch.allclose(torch.from_numpy(g), ref_grad, atol=1e-5)
