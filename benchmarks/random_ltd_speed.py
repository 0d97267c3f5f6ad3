"""Training-step time with random-LTD against the baseline, next to the ideal ratio.

One step = forward + backward + AdamW step of a GPTModel (defaults: 12 layers, hidden 768,
sequence 1024, micro-batch 1, vocabulary 8192, CPU). Random-LTD drops tokens in every layer
but the first and the last, keeping 1/4, 1/2 and 3/4 of the sequence. Configurations are
timed round-robin (so machine-load drift hits all of them alike) and the median is kept.

Ideal ratio = share of the model's compute that remains: per layer
``2n(4h^2 + 2h*ffn) + 4n^2 h`` FLOPs for ``n`` tokens (dense projections plus attention's
quadratic term), dropping layers at ``n = r`` and the others at ``n = S``, plus the LM
head ``2 S h V`` (the embedding lookup is negligible). The optimizer step does not depend
on tokens; its measured time is printed so the ideal with it counted can be read too.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/random_ltd_speed.py --steps 3
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron.data_efficiency.random_ltd import ops  # noqa: E402
from megatron.data_efficiency.random_ltd.plan import TokenDropPlan  # noqa: E402
from megatron.model.config import TransformerConfig  # noqa: E402
from megatron.model.gpt_model import GPTModel  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num-layers", type=int, default=12)
    p.add_argument("--hidden-size", type=int, default=768)
    p.add_argument("--num-attention-heads", type=int, default=12)
    p.add_argument("--seq-length", type=int, default=1024)
    p.add_argument("--micro-batch-size", type=int, default=1)
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--position-embedding-type", default="learned_absolute",
                   choices=("learned_absolute", "rope"))
    p.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    p.add_argument("--steps", type=int, default=3, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per configuration")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def layer_flops(n: int, h: int, ffn: int) -> float:
    """Forward FLOPs of one transformer layer on ``n`` tokens (backward is ~2x, same ratio)."""
    return 2 * n * (4 * h * h + 2 * h * ffn) + 4 * n * n * h


def ideal_ratio(seq: int, kept: int, num_layers: int, dropping: int, h: int, ffn: int,
                vocab: int) -> float:
    """Share of the step's compute left when ``dropping`` layers see ``kept`` tokens."""
    head = 2 * seq * h * vocab
    full = num_layers * layer_flops(seq, h, ffn) + head
    ltd = ((num_layers - dropping) * layer_flops(seq, h, ffn)
           + dropping * layer_flops(kept, h, ffn) + head)
    return ltd / full


def build(args: argparse.Namespace) -> tuple[GPTModel, torch.optim.Optimizer]:
    config = TransformerConfig(
        num_layers=args.num_layers, hidden_size=args.hidden_size,
        num_attention_heads=args.num_attention_heads, padded_vocab_size=args.vocab_size,
        max_position_embeddings=args.seq_length,
        position_embedding_type=args.position_embedding_type)
    torch.manual_seed(1234)
    model = GPTModel(config).train()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4)


def _cpu() -> tuple[float, float]:
    """(user, user + system) CPU seconds of this process so far."""
    t = os.times()
    return t.user, t.user + t.system


def train_step(model, optimizer, batch, plan) -> tuple[float, float, float, float]:
    """One step; returns (wall, CPU, user CPU, optimizer CPU) seconds.

    On a shared machine CPU time (with one thread) is the steadier measure: waiting for a
    core does not count, while all of this step's own work does. User time leaves out the
    kernel's page-fault work for freshly allocated activations, which grows faster than
    linearly with the sequence and so favours token dropping beyond the FLOP model.
    """
    tokens, positions, labels = batch
    wall, (user, cpu) = time.perf_counter(), _cpu()
    optimizer.zero_grad(set_to_none=True)
    loss = model(tokens, positions, None, labels, token_drop_plan=plan).mean()
    loss.backward()
    opt_cpu = _cpu()[1]
    optimizer.step()
    end_user, end_cpu = _cpu()
    return time.perf_counter() - wall, end_cpu - cpu, end_user - user, end_cpu - opt_cpu


def layer_cpu_time(model: GPTModel, args, n: int, reps: int) -> float:
    """Median user CPU seconds of one layer's forward + backward on ``n`` tokens, no dropping."""
    layer = model.transformer.layers[1]
    b, h = args.micro_batch_size, args.hidden_size
    rope = None
    if model.rotary_pos_emb is not None:
        rope = model.rotary_pos_emb(torch.arange(n).expand(b, n))
    times = []
    for _ in range(reps + 1):
        x = torch.randn(n, b, h, requires_grad=True)
        start = _cpu()[0]
        layer(x, None, rope).sum().backward()
        times.append(_cpu()[0] - start)
    model.zero_grad(set_to_none=True)
    return statistics.median(times[1:])


def ops_overhead(args, kept: int, dropping: int) -> float:
    """Seconds per step spent in gather/combine (fwd + bwd) for hidden states and rope."""
    s, b, h = args.seq_length, args.micro_batch_size, args.hidden_size
    hidden = torch.randn(s, b, h, requires_grad=True)
    rope = torch.randn(s, b, 1, h // args.num_attention_heads) \
        if args.position_embedding_type == "rope" else None
    plan = TokenDropPlan(frozenset(range(dropping)), kept, 1, 0, 0, 0)
    start = time.perf_counter()
    for layer in range(dropping):
        idx = plan.kept_indices(layer, b, s, "cpu")
        part = ops.gather_tokens(hidden, idx)
        if rope is not None:
            ops.gather_tokens(rope, idx)
        out = ops.combine_tokens(hidden, part * 1.0, idx)
        out.backward(torch.ones_like(out))
    return time.perf_counter() - start


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    s, b, L = args.seq_length, args.micro_batch_size, args.num_layers
    dropping_ids = frozenset(range(1, L - 1))
    kept = {f: max(1, int(round(f * s))) for f in args.fractions}
    configs = [("baseline", None)] + [(f"ltd {f:g}", f) for f in args.fractions]
    model, optimizer = build(args)
    torch.manual_seed(0)
    tokens = torch.randint(0, args.vocab_size, (b, s))
    batch = (tokens, torch.arange(s).expand(b, s), torch.roll(tokens, -1, dims=1))
    walls = {name: [] for name, _ in configs}
    cpus = {name: [] for name, _ in configs}
    users = {name: [] for name, _ in configs}
    opt_times = []
    for step in range(args.warmup + args.steps):
        for name, frac in configs:
            plan = None if frac is None else TokenDropPlan(dropping_ids, kept[frac], 1234,
                                                           step, 0, 0)
            wall, cpu, user, opt = train_step(model, optimizer, batch, plan)
            if step >= args.warmup:
                walls[name].append(wall)
                cpus[name].append(cpu)
                users[name].append(user)
                opt_times.append(opt)
    layer_times = {n: layer_cpu_time(model, args, n, args.steps)
                   for n in [s] + sorted(kept.values())}
    report(args, configs, kept, len(dropping_ids), (walls, cpus, users),
           statistics.median(opt_times), layer_times)


def report(args, configs, kept, dropping, timings, opt, layer_times) -> None:
    """Prints one row per configuration: time ratios against the baseline and the ideals.

    ``ideal`` is the FLOP model. ``m-ideal`` replaces, in the baseline step's user time, the
    dropping layers' measured user time at ``S`` by theirs at ``r``, so ``m-gap`` is what
    the dropping itself costs (gather, combine, index draws) beyond the smaller layers.
    ``gap`` and ``m-gap`` compare the user-time ratio.
    """
    s, L = args.seq_length, args.num_layers
    med = {kind: {name: statistics.median(v) for name, v in t.items()}
           for kind, t in zip(("wall", "cpu", "user"), timings)}
    print(f"GPT L={L} h={args.hidden_size} S={s} b={args.micro_batch_size} "
          f"V={args.vocab_size} pos={args.position_embedding_type} threads={args.threads} "
          f"steps={args.steps} (median), dropping layers={dropping}, ops path="
          f"{ops._resolve_impl(torch.zeros(1), None)}")
    print(f"optimizer step {opt:.3f}s CPU (token independent, inside every step time)")
    print("layer fwd+bwd user s: " + ", ".join(f"n={n}: {t:.3f}" for n, t in layer_times.items()))
    print(f"{'config':<9} {'kept':>5} {'wall s':>7} {'cpu s':>7} {'user s':>7} {'wall':>6} "
          f"{'cpu':>6} {'user':>6} {'ideal':>6} {'gap':>6} {'m-ideal':>7} {'m-gap':>6} "
          f"{'ops s':>6}")
    for name, frac in configs:
        r = s if frac is None else kept[frac]
        ratio = {kind: med[kind][name] / med[kind]["baseline"] for kind in med}
        ideal = ideal_ratio(s, r, L, dropping, args.hidden_size, 4 * args.hidden_size,
                            args.vocab_size)
        base_user = med["user"]["baseline"]
        measured = (base_user - dropping * (layer_times[s] - layer_times[r])) / base_user
        overhead = 0.0 if frac is None else ops_overhead(args, r, dropping)
        print(f"{name:<9} {r:>5} {med['wall'][name]:>7.2f} {med['cpu'][name]:>7.2f} "
              f"{med['user'][name]:>7.2f} {ratio['wall']:>6.3f} {ratio['cpu']:>6.3f} "
              f"{ratio['user']:>6.3f} {ideal:>6.3f} {ratio['user'] / ideal - 1:>+6.1%} "
              f"{measured:>7.3f} {ratio['user'] / measured - 1:>+6.1%} {overhead:>6.3f}")


if __name__ == "__main__":
    main()
