"""Checks the Triton kernels against the reference path; run under TRITON_INTERPRET=1.

Started in a subprocess by test_random_ltd_kernel.py, because the interpreter flag must be
set before triton is first imported. Exits non-zero (with the failing assertion) on error.
"""
import os
import sys

import torch

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

from megatron.data_efficiency.random_ltd import kernel, ops  # noqa: E402
from megatron.data_efficiency.random_ltd.plan import TokenDropPlan  # noqa: E402


def _run(impl, dtype, s, b, h, r, seed=0):
    torch.manual_seed(seed)
    idx = TokenDropPlan(frozenset({1}), r, seed, 0, 0, 0).kept_indices(1, b, s, "cpu")
    x = torch.randn(s, b, h).to(dtype).requires_grad_(True)
    part = ops.gather_tokens(x, idx, impl=impl)
    new = part * 3 + 1
    out = ops.combine_tokens(x, new, idx, impl=impl)
    grad = torch.randn(s, b, h).to(dtype)
    gx, gnew = torch.autograd.grad(out, (x, new), grad, retain_graph=True)
    (gpart,) = torch.autograd.grad(part, x, torch.ones_like(part))
    return part.detach(), out.detach(), gx, gnew, gpart


def check_bit_exact():
    shapes = [(12, 3, 40, 5), (9, 2, 2100, 4), (5, 1, 7, 5)]  # h over one BLOCK_H; r == s
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for s, b, h, r in shapes:
            want = _run("torch", dtype, s, b, h, r)
            got = _run("triton", dtype, s, b, h, r)
            for name, w, g in zip(("gather", "combine", "grad_full", "grad_part",
                                   "gather_backward"), want, got):
                assert w.dtype == g.dtype and torch.equal(w, g), (name, dtype, (s, b, h, r))


def check_kernels_directly():
    src = torch.randn(20, 6)
    rows = torch.tensor([3, 0, 19, 7])
    assert torch.equal(kernel.gather_rows(src, rows), src[rows])
    inv = ops.inverse_row_map(rows, 20)
    part = torch.randn(4, 6)
    sel = kernel.select_rows(part, src, inv)
    ref = src.clone()
    ref[rows] = part
    assert torch.equal(sel, ref)
    zeros = kernel.select_rows(part, None, inv)
    ref = torch.zeros_like(src)
    ref[rows] = part
    assert torch.equal(zeros, ref)
    gf, gp = kernel.split_rows(src, inv, 4)
    assert torch.equal(gp, src[rows]) and torch.equal(gf, src.index_fill(0, rows, 0))


def check_env_forcing_and_gradcheck():
    os.environ[ops.IMPL_ENV] = "triton"
    assert ops._resolve_impl(torch.zeros(1), None) == "triton"
    # Tiny: gradcheck launches the kernels once per input element under the interpreter.
    idx = TokenDropPlan(frozenset({1}), 2, 1, 0, 0, 0).kept_indices(1, 2, 4, "cpu")
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    p = torch.randn(2, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: ops.gather_tokens(t, idx), (x,))
    assert torch.autograd.gradcheck(lambda f, q: ops.combine_tokens(f, q, idx), (x, p))
    del os.environ[ops.IMPL_ENV]
    assert ops._resolve_impl(torch.zeros(1), None) == "torch"


def _gpt_loss_and_grads(impl):
    from megatron.model.config import TransformerConfig
    from megatron.model.gpt_model import GPTModel
    os.environ[ops.IMPL_ENV] = impl
    try:
        torch.manual_seed(0)
        config = TransformerConfig(num_layers=3, hidden_size=16, num_attention_heads=2,
                                   padded_vocab_size=32, max_position_embeddings=12,
                                   position_embedding_type="rope", hidden_dropout=0.0,
                                   attention_dropout=0.0)
        model = GPTModel(config).train()
        tokens = torch.randint(0, 32, (2, 12))
        plan = TokenDropPlan(frozenset({1}), 5, 3, 0, 0, 0)
        loss = model(tokens, torch.arange(12).expand(2, 12), None, tokens.roll(-1, 1),
                     token_drop_plan=plan)
        loss.mean().backward()
        return [loss.detach()] + [p.grad for p in model.parameters()]
    finally:
        del os.environ[ops.IMPL_ENV]


def check_gpt_model_with_kernels():
    for want, got in zip(_gpt_loss_and_grads("torch"), _gpt_loss_and_grads("triton")):
        assert torch.equal(want, got)


if __name__ == "__main__":
    check_bit_exact()
    check_kernels_directly()
    check_env_forcing_and_gradcheck()
    check_gpt_model_with_kernels()
    print("random-LTD kernel checks passed")
    sys.exit(0)
