"""tensor_parallel: mappings, split layers and vocab-parallel CE on 2 gloo ranks vs an
unsharded reference; RNG tracker and activation checkpointing in one process."""
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from megatron.core import parallel_state as ps
from megatron.core import tensor_parallel as tp

CFG = SimpleNamespace(params_dtype=torch.float32, use_cpu_initialization=True,
                      sequence_parallel=False)


def _init(t):
    return torch.nn.init.normal_(t, std=0.5)


def _check_mappings(rank):
    torch.manual_seed(0)
    x = torch.randn(4, 3, 6)                 # same on both ranks
    g_all = torch.randn(2, 4, 3, 6)          # same on both ranks
    torch.manual_seed(1)
    g = torch.randn(2, 4, 3, 6)
    mine = g[rank]                           # rank-dependent upstream grad
    total = g[0] + g[1]

    a = x.clone().requires_grad_()
    out = tp.copy_to_tensor_model_parallel_region(a)
    out.backward(mine)
    assert torch.equal(out, x) and torch.allclose(a.grad, total)

    a = (x * (rank + 1)).requires_grad_()
    out = tp.reduce_from_tensor_model_parallel_region(a)
    out.backward(mine)
    assert torch.allclose(out, 3 * x) and torch.equal(a.grad, mine)

    a = x.clone().requires_grad_()
    out = tp.scatter_to_tensor_model_parallel_region(a)
    assert torch.equal(out, x[..., rank * 3:(rank + 1) * 3])
    out.backward(g_all[0][..., rank * 3:(rank + 1) * 3])
    assert torch.equal(a.grad, g_all[0])

    part = x[..., rank * 3:(rank + 1) * 3].clone().requires_grad_()
    out = tp.gather_from_tensor_model_parallel_region(part)
    out.backward(g_all[1])
    assert torch.equal(out, x) and torch.equal(part.grad, g_all[1][..., rank * 3:(rank + 1) * 3])

    a = x.clone().requires_grad_()
    out = tp.scatter_to_sequence_parallel_region(a)
    assert torch.equal(out, x[rank * 2:(rank + 1) * 2])
    out.backward(g_all[0][rank * 2:(rank + 1) * 2])
    assert torch.equal(a.grad, g_all[0])

    part = x[rank * 2:(rank + 1) * 2].clone().requires_grad_()
    out = tp.gather_from_sequence_parallel_region(part)   # backward = reduce-scatter
    out.backward(mine)
    assert torch.equal(out, x) and torch.allclose(part.grad, total[rank * 2:(rank + 1) * 2])

    a = (x * (rank + 1)).requires_grad_()
    out = tp.reduce_scatter_to_sequence_parallel_region(a)
    assert torch.allclose(out, 3 * x[rank * 2:(rank + 1) * 2])
    out.backward(g_all[0][rank * 2:(rank + 1) * 2])
    assert torch.equal(a.grad, g_all[0])


def _check_linear_pair(rank):
    """Column (no gather) -> Row: the MLP pattern, vs X A^T B^T + b."""
    torch.manual_seed(5)
    col = tp.ColumnParallelLinear(8, 12, config=CFG, init_method=_init)
    row = tp.RowParallelLinear(12, 8, config=CFG, init_method=_init)
    torch.manual_seed(5)
    wa, wb = _init(torch.empty(12, 8)), _init(torch.empty(8, 12))
    assert col.weight.partition_dim == 0 and row.weight.partition_dim == 1
    assert col.weight.tensor_model_parallel and col.weight.partition_stride == 1
    torch.manual_seed(6)
    x, gout = torch.randn(5, 2, 8), torch.randn(5, 2, 8)
    with torch.no_grad():
        row.bias.fill_(0.25)
    xa = x.clone().requires_grad_()
    out = row(col(xa)[0])[0]
    out.backward(gout)
    xr, wa, wb = x.clone().requires_grad_(), wa.requires_grad_(), wb.requires_grad_()
    ref = F.linear(F.linear(xr, wa), wb) + 0.25
    ref.backward(gout)
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(xa.grad, xr.grad, atol=1e-5)
    assert torch.allclose(col.weight.grad, wa.grad[rank * 6:(rank + 1) * 6], atol=1e-5)
    assert torch.allclose(row.weight.grad, wb.grad[:, rank * 6:(rank + 1) * 6], atol=1e-5)

    # gather_output and input_is_parallel=False paths
    col2 = tp.ColumnParallelLinear(8, 12, config=CFG, init_method=_init, gather_output=True,
                                   bias=False)
    row2 = tp.RowParallelLinear(12, 8, config=CFG, init_method=_init, input_is_parallel=False,
                                bias=False)
    full = col2(x)[0]
    assert full.shape == (5, 2, 12)
    assert torch.allclose(full, F.linear(x, _gather_rows(col2.weight)), atol=1e-5)
    assert torch.allclose(row2(full)[0], F.linear(full, _gather_cols(row2.weight)), atol=1e-5)


def _gather_rows(w):
    parts = [torch.empty_like(w) for _ in range(2)]
    dist.all_gather(parts, w.detach().contiguous())
    return torch.cat(parts, 0)


def _gather_cols(w):
    parts = [torch.empty_like(w) for _ in range(2)]
    dist.all_gather(parts, w.detach().contiguous())
    return torch.cat(parts, 1)


def _check_embedding_and_ce(rank):
    torch.manual_seed(7)
    emb = tp.VocabParallelEmbedding(10, 4, init_method=_init, config=CFG)
    torch.manual_seed(7)
    ref_w = _init(torch.empty(10, 4)).requires_grad_()
    ids = torch.tensor([[0, 9, 4, 5], [5, 4, 1, 1]])
    g = torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(3))
    out = emb(ids)
    out.backward(g)
    ref = F.embedding(ids, ref_w)
    ref.backward(g)
    assert torch.allclose(out, ref) and torch.allclose(emb.weight.grad, ref_w.grad[rank * 5:(rank + 1) * 5])

    gen = torch.Generator().manual_seed(11)
    logits = torch.randn(3, 2, 10, generator=gen) * 4
    target = torch.randint(0, 10, (3, 2), generator=gen)
    gl = torch.rand(3, 2, generator=gen)
    part = logits[..., rank * 5:(rank + 1) * 5].clone().requires_grad_()
    loss = tp.vocab_parallel_cross_entropy(part, target)
    loss.backward(gl)
    full = logits.clone().requires_grad_()
    ref = F.cross_entropy(full.view(-1, 10), target.view(-1), reduction="none").view(3, 2)
    ref.backward(gl)
    assert torch.allclose(loss, ref, atol=1e-5)
    assert torch.allclose(part.grad, full.grad[..., rank * 5:(rank + 1) * 5], atol=1e-6)
    # padding ids (>= vocab_size) are out of the softmax, also when a rank holds only padding
    for vocab in (7, 5):
        real_target = target % vocab
        part = logits[..., rank * 5:(rank + 1) * 5].clone().requires_grad_()
        loss = tp.vocab_parallel_cross_entropy(part, real_target, vocab_size=vocab)
        loss.backward(gl)
        real = logits[..., :vocab].clone().requires_grad_()
        ref = F.cross_entropy(real.reshape(-1, vocab), real_target.view(-1),
                              reduction="none").view(3, 2)
        ref.backward(gl)
        grad = torch.cat([real.grad, torch.zeros(3, 2, 10 - vocab)], dim=-1)
        assert torch.allclose(loss, ref, atol=1e-5), vocab
        assert torch.equal(part.grad[..., max(0, vocab - rank * 5):],
                           torch.zeros_like(part.grad[..., max(0, vocab - rank * 5):]))
        assert torch.allclose(part.grad, grad[..., rank * 5:(rank + 1) * 5], atol=1e-6)


def _check_rng(rank):
    tp.model_parallel_seed(1234)
    default = torch.rand(4)
    with tp.get_rng_tracker().fork():
        tracked = torch.rand(4)
    both = [torch.empty(4) for _ in range(2)], [torch.empty(4) for _ in range(2)]
    dist.all_gather(both[0], default)
    dist.all_gather(both[1], tracked)
    assert torch.equal(both[0][0], both[0][1]), "default RNG must match across TP ranks"
    assert not torch.equal(both[1][0], both[1][1]), "tracker RNG must differ across TP ranks"
    torch.manual_seed(1234 + 2718 + rank)
    assert torch.equal(tracked, torch.rand(4))


def _tp2_worker(rank, world_size):
    ps.initialize_model_parallel(2, 1)
    _check_mappings(rank)
    _check_linear_pair(rank)
    _check_embedding_and_ce(rank)
    _check_rng(rank)
    return True


def two_rank_jobs(tmp_path_factory) -> dict:
    """This module's job in the session's shared 2-rank spawn (tests/conftest.py)."""
    return {"tensor_parallel": (_tp2_worker,)}


def test_tensor_parallel_on_two_ranks(two_rank_spawn):
    assert two_rank_spawn["tensor_parallel"] == [True, True]


def test_cross_entropy_matches_torch_single_process():
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(5, 3, 17, generator=gen) * 10).requires_grad_()
    target = torch.randint(0, 17, (5, 3), generator=gen)
    loss = tp.vocab_parallel_cross_entropy(logits, target)
    loss.sum().backward()
    ref_logits = logits.detach().clone().requires_grad_()
    ref = F.cross_entropy(ref_logits.view(-1, 17), target.view(-1), reduction="none").view(5, 3)
    ref.sum().backward()
    assert loss.dtype == torch.float32
    assert torch.allclose(loss, ref, atol=1e-5)
    assert torch.allclose(logits.grad, ref_logits.grad, atol=1e-6)


def test_rng_tracker_fork_restores_default_state():
    tracker = tp.RNGStatesTracker()
    torch.manual_seed(3)
    tracker.add("a", 42)
    expected_default = torch.rand(3)
    torch.manual_seed(3)
    tracker.add("b", 43)  # adding must not consume the default stream
    with tracker.fork("a"):
        first = torch.rand(3)
    assert torch.equal(torch.rand(3), expected_default)
    states = tracker.get_states()
    with tracker.fork("a"):
        second = torch.rand(3)
    assert not torch.equal(first, second)           # the tracked stream advanced
    tracker.set_states(states)
    with tracker.fork("a"):
        assert torch.equal(torch.rand(3), second)   # set_states rewinds it
    torch.manual_seed(42)
    assert torch.equal(torch.rand(3), first)
    with pytest.raises(ValueError):
        tracker.add("c", 42)
    with pytest.raises(RuntimeError):
        with tracker.fork("missing"):
            pass
    tracker.reset()
    assert not tracker.is_initialized("a")


def _block(x, w):
    h = F.dropout(torch.tanh(x @ w), p=0.5, training=True)          # default RNG
    with tp.get_rng_tracker().fork():
        h = F.dropout(h, p=0.3, training=True)                      # tracked RNG
    return h * 2.0


def test_checkpoint_replays_dropout_masks():
    tp.model_parallel_seed(99)
    torch.manual_seed(5)
    x0, w0 = torch.randn(6, 8), torch.randn(8, 8)
    states = (torch.get_rng_state(), tp.get_rng_tracker().get_states())

    x1, w1 = x0.clone().requires_grad_(), w0.clone().requires_grad_()
    out1 = _block(x1, w1)
    out1.sum().backward()

    torch.set_rng_state(states[0])
    tp.get_rng_tracker().set_states(states[1])
    x2, w2 = x0.clone().requires_grad_(), w0.clone().requires_grad_()
    out2 = tp.checkpoint(_block, False, x2, w2)
    torch.rand(2)  # move the RNGs on between forward and backward
    with tp.get_rng_tracker().fork():
        torch.rand(2)
    out2.sum().backward()
    assert torch.equal(out1, out2)
    assert torch.equal(x1.grad, x2.grad) and torch.equal(w1.grad, w2.grad)
    assert (out1 == 0).any()  # dropout really happened
    tp.get_rng_tracker().reset()  # leave no tracked state behind for other tests


def test_padding_rows_take_no_part_in_the_loss():
    """Whatever the padding logits hold (zeros from a re-padded checkpoint, or trained
    values), the loss equals torch's over the real vocabulary."""
    gen = torch.Generator().manual_seed(3)
    real = torch.randn(4, 2, 11, generator=gen) * 3
    target = torch.randint(0, 11, (4, 2), generator=gen)
    ref = F.cross_entropy(real.view(-1, 11), target.view(-1), reduction="none").view(4, 2)
    for pad in (torch.zeros(4, 2, 5), torch.full((4, 2, 21), 50.0)):
        padded = torch.cat([real, pad], dim=-1).requires_grad_()
        loss = tp.vocab_parallel_cross_entropy(padded, target, vocab_size=11)
        assert torch.allclose(loss, ref, atol=1e-5)
        loss.sum().backward()
        assert not padded.grad[..., 11:].any()
        masked = tp.mask_padded_vocab(padded.detach(), 11)
        assert torch.equal(masked[..., :11], real) and torch.isinf(masked[..., 11:]).all()
    unmasked = tp.vocab_parallel_cross_entropy(torch.cat([real, torch.zeros(4, 2, 5)], -1), target)
    assert not torch.allclose(unmasked, ref, atol=1e-3)   # without vocab_size zeros do count


def test_cross_entropy_leaves_the_callers_logits_untouched():
    """The loss works in one fp32 copy changed in place; the logits handed in (fp32 or
    bf16, in training or under no_grad, padding masked or not) keep their values, which
    evaluation reads again for the accuracy."""
    gen = torch.Generator().manual_seed(5)
    target = torch.randint(0, 11, (4, 2), generator=gen)
    for dtype in (torch.float32, torch.bfloat16):
        logits = (torch.randn(4, 2, 16, generator=gen) * 3).to(dtype)
        before = logits.clone()
        for vocab_size in (None, 11):
            with torch.no_grad():
                tp.vocab_parallel_cross_entropy(logits, target, vocab_size)
            trained = logits.clone().requires_grad_()
            tp.vocab_parallel_cross_entropy(trained, target, vocab_size).sum().backward()
            assert torch.equal(logits, before) and torch.equal(trained.detach(), before)
