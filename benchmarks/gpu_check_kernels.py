"""Parts (b) and (d) of ``benchmarks/gpu_check.sh``: the random-LTD hot path.

(b) ``kernels``: the Triton gather / combine kernels against the PyTorch path, fp32 and
bf16, sequence lengths 1024..8192: bit-exact outputs and gradients, and the time of each
path (CUDA events, median) as a ratio to the PyTorch path.

(d) ``ltd``: a bf16 training step (forward, backward, AdamW with fp32 main parameters) of a
GPT with every layer but the first and the last dropping tokens, at kept fractions 1/4,
1/2 and 3/4 of the sequence, each as a ratio to the same model's step without dropping
measured in the same run, beside the ratio of the model FLOPs kept
(``random_ltd_speed.ideal_ratio``). The token-drop plans are drawn as training draws them
(``TokenDropPlan.draw``: all layers at once, one non-blocking copy per micro-batch).

``smoke``: tiny sizes on the CPU (Triton under ``TRITON_INTERPRET=1``); the figures mean
nothing there, the code paths are the GPU's.
"""
from __future__ import annotations

import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from megatron.data_efficiency.random_ltd import ops  # noqa: E402
from megatron.data_efficiency.random_ltd.plan import TokenDropPlan  # noqa: E402


def device_for(smoke: bool) -> torch.device:
    if smoke:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device (--smoke checks the script on the CPU)")
    return torch.device("cuda", torch.cuda.current_device())


def timed(fn, device: torch.device, reps: int) -> float:
    """Median seconds of ``fn()`` over ``reps`` runs after one warm-up (CUDA events on GPU)."""
    fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000.0)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _gather_combine(impl: str, x: torch.Tensor, idx: torch.Tensor, grad: torch.Tensor):
    x = x.detach().requires_grad_(True)
    part = ops.gather_tokens(x, idx, impl=impl)
    new = part * 3 + 1
    out = ops.combine_tokens(x, new, idx, impl=impl)
    gx, gnew = torch.autograd.grad(out, (x, new), grad)
    return part.detach(), out.detach(), gx, gnew


def check_kernels(smoke: bool) -> dict:
    """(b): bit-exactness and time ratio of each (dtype, sequence length)."""
    device = device_for(smoke)
    seqs, b, h, reps = ((16, 40), 2, 40, 1) if smoke else ((1024, 2048, 4096, 8192), 4, 1024, 20)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for s in seqs:
            plan = TokenDropPlan.draw(frozenset({1}), s // 2, 1234, 0, 0, 0, b, s, device)
            idx = plan.kept_indices(1, b, s, device)
            gen = torch.Generator(device=device.type).manual_seed(s)
            x = torch.randn(s, b, h, device=device, generator=gen).to(dtype)
            grad = torch.randn(s, b, h, device=device, generator=gen).to(dtype)
            want = _gather_combine("torch", x, idx, grad)
            got = _gather_combine("triton", x, idx, grad)
            t_torch = timed(lambda: _gather_combine("torch", x, idx, grad), device, reps)
            t_triton = timed(lambda: _gather_combine("triton", x, idx, grad), device, reps)
            rows.append({"dtype": str(dtype).split(".")[-1], "seq": s, "batch": b, "hidden": h,
                         "bit_exact": all(torch.equal(w, g) for w, g in zip(want, got)),
                         "torch_ms": t_torch * 1e3, "triton_ms": t_triton * 1e3,
                         "ratio": t_triton / t_torch})
    exact = all(r["bit_exact"] for r in rows)
    worst = max(r["ratio"] for r in rows)
    return {"status": "ok" if exact else "failed", "rows": rows,
            "summary": f"{'bit-exact' if exact else 'DIFFERS from the PyTorch path'} in "
                       f"{sum(r['bit_exact'] for r in rows)}/{len(rows)}; time triton/torch "
                       f"{min(r['ratio'] for r in rows):.2f}..{worst:.2f}"}


def _ltd_model(size: dict, smoke: bool, device: torch.device):
    from megatron.model.config import TransformerConfig
    from megatron.model.gpt_model import GPTModel
    from megatron.optimizer import OptimizerConfig, get_megatron_optimizer
    config = TransformerConfig(
        num_layers=size["layers"], hidden_size=size["hidden"], num_attention_heads=size["heads"],
        padded_vocab_size=size["vocab"], max_position_embeddings=size["seq"],
        position_embedding_type="rope", hidden_dropout=0.0, attention_dropout=0.0,
        params_dtype=torch.float32 if smoke else torch.bfloat16)
    torch.manual_seed(1234)
    model = GPTModel(config).to(device).train()
    return model, get_megatron_optimizer([model], OptimizerConfig(lr=1e-4, bf16=not smoke))


def check_ltd(smoke: bool) -> dict:
    """(d): step-time ratios at kept 1/4, 1/2, 3/4 beside the FLOPs-kept ideal."""
    from random_ltd_speed import ideal_ratio
    device = device_for(smoke)
    size = (dict(layers=4, hidden=32, heads=2, seq=32, vocab=64, batch=2, steps=1) if smoke else
            dict(layers=24, hidden=1024, heads=16, seq=2048, vocab=50304, batch=4, steps=5))
    model, optimizer = _ltd_model(size, smoke, device)
    b, s, layers = size["batch"], size["seq"], size["layers"]
    dropping = frozenset(range(1, layers - 1))
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, size["vocab"], (b, s + 1), generator=gen).to(device)
    positions = torch.arange(s, device=device).expand(b, s)
    step_no = [0]

    def step(kept: int | None) -> None:
        step_no[0] += 1
        plan = None if kept is None else TokenDropPlan.draw(
            dropping, kept, 1234, step_no[0], 0, 0, b, s, device)
        optimizer.zero_grad()
        model(tokens[:, :-1], positions, None, labels=tokens[:, 1:],
              token_drop_plan=plan).float().mean().backward()
        optimizer.step()

    base = timed(lambda: step(None), device, size["steps"])
    rows = []
    for frac in (0.25, 0.5, 0.75):
        kept = int(round(frac * s))
        t = timed(lambda: step(kept), device, size["steps"])
        rows.append({"kept_fraction": frac, "kept": kept, "step_ms": t * 1e3,
                     "ratio": t / base, "ideal": ideal_ratio(s, kept, layers, len(dropping),
                                                             size["hidden"], 4 * size["hidden"],
                                                             size["vocab"])})
    return {"status": "ok", "model": size, "baseline_step_ms": base * 1e3, "rows": rows,
            "summary": "step ratio (ideal) at kept " + ", ".join(
                f"{r['kept_fraction']:g}: {r['ratio']:.2f} ({r['ideal']:.2f})" for r in rows)}
