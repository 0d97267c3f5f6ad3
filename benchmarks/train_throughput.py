"""Training-step throughput and model FLOPs utilisation (MFU) against this machine's
measured fp32 matmul peak.

    OMP_NUM_THREADS=2 python benchmarks/train_throughput.py            # CPU, the default GPT
    python benchmarks/train_throughput.py --device cuda --bf16          # on a GPU

1. Peak: the best FLOP/s of ``torch.mm`` on large square fp32 matrices (best of several).
2. Step: forward + backward + AdamW step of a GPT (6 layers, hidden 512, 8 heads, seq 512,
   vocab 32000, micro-batch 8 by default), the same GPTModel and optimizer pretrain() uses.
3. Model FLOPs per step, Megatron-LM's formula for forward + backward without recompute
   (``megatron.throughput``, the count the training log's TFLOP/s uses):
   ``72 * B * s * l * h^2 * (1 + s / (12h) + V / (12 * l * h))`` for this plain GPT.
MFU = model FLOPs per step / step time / measured peak.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron.model.config import TransformerConfig  # noqa: E402
from megatron.model.gpt_model import GPTModel  # noqa: E402
from megatron.optimizer import OptimizerConfig, get_megatron_optimizer  # noqa: E402
from megatron.throughput import ModelFlops  # noqa: E402


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_peak(n: int, repeats: int, device: str, dtype: torch.dtype) -> float:
    """Best FLOP/s of an ``n x n`` by ``n x n`` matmul over ``repeats`` runs."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    torch.mm(a, b, out=out)   # warm-up
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best


def model_flops_per_step(batch: int, seq: int, layers: int, hidden: int, vocab: int) -> float:
    """Megatron-LM's forward + backward FLOPs of one global batch of a plain GPT (4h MLP,
    multi-head attention), no recompute."""
    model = ModelFlops(num_layers=layers, hidden_size=hidden, ffn_hidden_size=4 * hidden,
                       num_attention_heads=1, kv_channels=hidden, num_query_groups=1,
                       vocab_size=vocab)
    return float(model.step_flops(batch, seq))


def build(args: argparse.Namespace):
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    config = TransformerConfig(
        num_layers=args.num_layers, hidden_size=args.hidden_size,
        num_attention_heads=args.num_attention_heads, padded_vocab_size=args.vocab_size,
        max_position_embeddings=args.seq_length, hidden_dropout=args.dropout,
        attention_dropout=args.dropout, params_dtype=dtype)
    model = GPTModel(config).to(args.device)
    optimizer = get_megatron_optimizer([model], OptimizerConfig(lr=1e-4, bf16=args.bf16))
    return model, optimizer


def train_steps(model, optimizer, args: argparse.Namespace, steps: int) -> list[float]:
    """Seconds per training step (forward, backward, clip, AdamW)."""
    b, s = args.micro_batch_size, args.seq_length
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, args.vocab_size, (b, s + 1), generator=gen).to(args.device)
    inputs, labels = tokens[:, :-1], tokens[:, 1:]
    positions = torch.arange(s, device=args.device).expand(b, s)
    times = []
    for _ in range(steps):
        _sync(args.device)
        t0 = time.perf_counter()
        optimizer.zero_grad()
        loss = model(inputs, positions, None, labels=labels).float().mean()
        loss.backward()
        optimizer.step()
        _sync(args.device)
        times.append(time.perf_counter() - t0)
    return times


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-layers", type=int, default=6)
    p.add_argument("--hidden-size", type=int, default=512)
    p.add_argument("--num-attention-heads", type=int, default=8)
    p.add_argument("--seq-length", type=int, default=512)
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--micro-batch-size", type=int, default=8)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--steps", type=int, default=4, help="timed steps (after 1 warm-up step)")
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 model (peak measured in bf16)")
    return p.parse_args()


def main() -> None:
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    peak_dtype = torch.bfloat16 if args.bf16 else torch.float32
    peak = matmul_peak(args.matmul_size, 5, args.device, peak_dtype)
    print(f"device {args.device}, {torch.get_num_threads()} threads; "
          f"{str(peak_dtype).split('.')[-1]} matmul peak ({args.matmul_size}^2): "
          f"{peak / 1e9:.1f} GFLOP/s", flush=True)
    model, optimizer = build(args)
    train_steps(model, optimizer, args, 1)   # warm-up (allocations, optimizer state)
    times = train_steps(model, optimizer, args, args.steps)
    step = statistics.median(times)
    # Measure the peak again: on shared cores the best of both is the machine's peak.
    peak = max(peak, matmul_peak(args.matmul_size, 5, args.device, peak_dtype))
    print(f"matmul peak, best before/after the steps: {peak / 1e9:.1f} GFLOP/s")
    flops = model_flops_per_step(args.micro_batch_size, args.seq_length, args.num_layers,
                                 args.hidden_size, args.vocab_size)
    tokens = args.micro_batch_size * args.seq_length
    print(f"GPT l={args.num_layers} h={args.hidden_size} heads={args.num_attention_heads} "
          f"s={args.seq_length} V={args.vocab_size} B={args.micro_batch_size}: "
          f"step {step * 1000:.0f} ms (median of {len(times)}; min {min(times) * 1000:.0f} ms)")
    print(f"tokens/s: {tokens / step:.0f}")
    print(f"model FLOPs per step: {flops / 1e9:.1f} GFLOP; achieved {flops / step / 1e9:.1f} "
          f"GFLOP/s")
    print(f"MFU vs measured matmul peak: {100.0 * flops / step / peak:.1f}% (median step), "
          f"{100.0 * flops / min(times) / peak:.1f}% (fastest step)")
    if hasattr(os, "getloadavg"):
        # Other processes on the same cores slow the long step more than the short,
        # best-of-N peak measurement: read MFU together with the load.
        print(f"load average (1 min) during the run: {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
