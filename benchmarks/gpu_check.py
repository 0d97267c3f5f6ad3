"""GPU checks of the random-LTD hot path, run by ``benchmarks/gpu_check.sh``.

    python benchmarks/gpu_check.py kernels [--smoke]   # Triton vs PyTorch path
    python benchmarks/gpu_check.py ltd [--smoke]       # step-time ratios at kept 1/4, 1/2, 3/4

``kernels``: the Triton gather / combine kernels compiled for the device against the
PyTorch reference path, fp32 and bf16, sequence lengths up to 8192: bit-exact outputs and
gradients, and the time of each path (CUDA events, median) as a ratio to the PyTorch path.

``ltd``: a bf16 training step (forward, backward, AdamW with fp32 main parameters) of a GPT
with every layer but the first and the last dropping tokens, at kept fractions 1/4, 1/2 and
3/4 of the sequence, each as a ratio to the same model's step without dropping measured in
the same run, beside the ratio of the model FLOPs kept (``random_ltd_speed.ideal_ratio``).
The token-drop plans are drawn as training draws them (``TokenDropPlan.draw``: all layers
at once, one non-blocking copy per micro-batch).

``--smoke`` runs tiny sizes on the CPU (Triton under ``TRITON_INTERPRET=1``) to check that
the script itself works; its figures mean nothing.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from megatron.data_efficiency.random_ltd import ops  # noqa: E402
from megatron.data_efficiency.random_ltd.plan import TokenDropPlan  # noqa: E402


def _device(smoke: bool) -> torch.device:
    if smoke:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device (use --smoke to check the script on CPU)")
    return torch.device("cuda", torch.cuda.current_device())


def _timed(fn, device: torch.device, reps: int) -> float:
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


def check_kernels(smoke: bool) -> None:
    device = _device(smoke)
    seqs, b, h, reps = ((64, 256), 2, 48, 1) if smoke else ((1024, 2048, 4096, 8192), 4, 1024, 20)
    print(f"kernels on {device}: gather + combine, forward + backward, b={b} h={h}, "
          f"kept half of the sequence; time ratio triton / torch (median of {reps})")
    failures = 0
    for dtype in (torch.float32, torch.bfloat16):
        for s in seqs:
            plan = TokenDropPlan.draw(frozenset({1}), s // 2, 1234, 0, 0, 0, b, s, device)
            idx = plan.kept_indices(1, b, s, device)
            gen = torch.Generator(device=device.type).manual_seed(s)
            x = torch.randn(s, b, h, device=device, generator=gen).to(dtype)
            grad = torch.randn(s, b, h, device=device, generator=gen).to(dtype)
            want = _gather_combine("torch", x, idx, grad)
            got = _gather_combine("triton", x, idx, grad)
            exact = all(torch.equal(w, g) for w, g in zip(want, got))
            failures += not exact
            t_torch = _timed(lambda: _gather_combine("torch", x, idx, grad), device, reps)
            t_triton = _timed(lambda: _gather_combine("triton", x, idx, grad), device, reps)
            print(f"  {str(dtype).split('.')[-1]:8s} s={s:5d}: bit-exact {exact}; torch "
                  f"{t_torch * 1e3:.3f} ms, triton {t_triton * 1e3:.3f} ms, ratio "
                  f"{t_triton / t_torch:.2f}", flush=True)
    if failures:
        raise SystemExit(f"gpu_check: {failures} kernel configurations differ from the "
                         "PyTorch path")


def _ltd_model(args, device):
    from megatron.model.config import TransformerConfig
    from megatron.model.gpt_model import GPTModel
    from megatron.optimizer import OptimizerConfig, get_megatron_optimizer
    config = TransformerConfig(
        num_layers=args.num_layers, hidden_size=args.hidden_size,
        num_attention_heads=args.num_attention_heads, padded_vocab_size=args.vocab_size,
        max_position_embeddings=args.seq_length, position_embedding_type="rope",
        hidden_dropout=0.0, attention_dropout=0.0,
        params_dtype=torch.float32 if args.smoke else torch.bfloat16)
    torch.manual_seed(1234)
    model = GPTModel(config).to(device).train()
    return model, get_megatron_optimizer([model], OptimizerConfig(lr=1e-4, bf16=not args.smoke))


def check_ltd(args) -> None:
    from random_ltd_speed import ideal_ratio
    device = _device(args.smoke)
    model, optimizer = _ltd_model(args, device)
    b, s, layers = args.micro_batch_size, args.seq_length, args.num_layers
    dropping = frozenset(range(1, layers - 1))
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, args.vocab_size, (b, s + 1), generator=gen).to(device)
    positions = torch.arange(s, device=device).expand(b, s)
    step_no = [0]

    def step(kept: int | None) -> None:
        step_no[0] += 1
        plan = None if kept is None else TokenDropPlan.draw(
            dropping, kept, 1234, step_no[0], 0, 0, b, s, device)
        optimizer.zero_grad()
        loss = model(tokens[:, :-1], positions, None, labels=tokens[:, 1:],
                     token_drop_plan=plan).float().mean()
        loss.backward()
        optimizer.step()

    base = _timed(lambda: step(None), device, args.steps)
    print(f"random-LTD on {device}: GPT l={layers} h={args.hidden_size} "
          f"heads={args.num_attention_heads} s={s} V={args.vocab_size} B={b}, "
          f"{'fp32' if args.smoke else 'bf16'}, layers 1..{layers - 2} dropping; baseline "
          f"step {base * 1e3:.1f} ms (median of {args.steps})")
    ffn = 4 * args.hidden_size
    for frac in (0.25, 0.5, 0.75):
        kept = int(round(frac * s))
        t = _timed(lambda: step(kept), device, args.steps)
        ideal = ideal_ratio(s, kept, layers, len(dropping), args.hidden_size, ffn,
                            args.vocab_size)
        print(f"  kept {frac:g} ({kept} tokens): step {t * 1e3:.1f} ms, ratio to baseline "
              f"{t / base:.3f}, ideal (FLOPs kept) {ideal:.3f}", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("check", choices=["kernels", "ltd"])
    p.add_argument("--smoke", action="store_true", help="tiny sizes on CPU")
    p.add_argument("--num-layers", type=int, default=24)
    p.add_argument("--hidden-size", type=int, default=1024)
    p.add_argument("--num-attention-heads", type=int, default=16)
    p.add_argument("--seq-length", type=int, default=2048)
    p.add_argument("--vocab-size", type=int, default=50304)
    p.add_argument("--micro-batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args(argv)
    if args.check == "kernels":
        check_kernels(args.smoke)
    else:
        check_ltd(args)


if __name__ == "__main__":
    main()
