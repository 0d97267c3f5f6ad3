"""Memory of the ZeRO-1 distributed optimizer against the ZeRO-1 formula.

    python benchmarks/optimizer_memory.py                       # bf16 GPT, DP 8
    python benchmarks/optimizer_memory.py --fp32 --dp 4

One process plays rank 0 of a data-parallel group of ``--dp`` ranks: torch's fake process
group (``torch.testing._internal.distributed.fake_pg``) answers every collective without
moving or allocating anything, so what is measured is this codebase's memory, exactly as
one rank of a real DP group holds it (the numbers it computes are not meaningful).

Memory is measured on the CPU with ``torch.profiler`` (``profile_memory=True``) around
the whole run, from building the model on: every allocation and free in time order, their
running sum read at the start and end of each phase (``record_function`` marks). The
phases, the steps each after a forward/backward that filled the gradient buffer:

0. building the model: its parameters;
1. building the optimizer: the gradient buffer, the parameter buffer (the parameters move
   into it) and the fp32 masters of this rank's shard;
2. the first step: Adam's two moments for the shard appear;
3. a later step: nothing persistent should appear, and the peak above the step's start is
   the step's full-size temporaries (ZeRO-1 has none: a few scalars).

ZeRO-1 bytes per parameter (Megatron's distributed-optimizer table, ``N`` parameters,
``d`` data-parallel ranks): bf16 parameters with fp32 gradients ``2 + 4 + 12/d`` (fp32
master + two moments sharded), fp32 parameters ``4 + 4 + 8/d`` (the master is the
parameter itself). The measured total is everything the run holds after the first step
(gradients a backward left outside the buffer included).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron.core import parallel_state  # noqa: E402
from megatron.model.config import TransformerConfig  # noqa: E402
from megatron.model.gpt_model import GPTModel  # noqa: E402
from megatron.model.module import Float16Module  # noqa: E402
from megatron.optimizer import OptimizerConfig, get_megatron_optimizer  # noqa: E402

GiB = float(1 << 30)


@dataclass
class MemoryReport:
    params: int                  # N
    dp: int
    dtype: str
    model_bytes: int             # the parameters before the optimizer exists
    build_bytes: int             # net: buffers + masters
    first_step_bytes: int        # net: Adam state
    measured_bytes: int          # everything still held after the first step
    later_step_net_bytes: int    # net of a steady-state step (0 for ZeRO-1)
    later_step_peak_bytes: int   # transient peak of that step above its start
    formula_bytes: int           # ZeRO-1: N * (2 + 4 + 12/d) or N * (4 + 4 + 8/d)

    @property
    def ratio(self) -> float:
        return self.measured_bytes / self.formula_bytes


def zero1_bytes(num_params: int, dp: int, bf16: bool) -> int:
    """ZeRO-1 memory of one rank (parameters, gradients, sharded optimizer state)."""
    per_param = (2 + 4 + 12 / dp) if bf16 else (4 + 4 + 8 / dp)
    return int(num_params * per_param)


def _running_sums(prof, marks: list[str]) -> dict[str, tuple[int, int, int]]:
    """``{mark: (bytes at its start, bytes at its end, peak inside)}``: the running sum of
    every allocation and free the profiler saw, read at each ``record_function`` mark."""
    events = prof.profiler.kineto_results.events()
    memory = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    spans = {e.name(): (e.start_ns(), e.end_ns()) for e in events if e.name() in marks}
    out = {}
    for mark in marks:
        begin, end = spans[mark]
        total = at_begin = peak = 0
        for t, nbytes in memory:
            if t > end:
                break
            total += nbytes
            if t < begin:
                at_begin = total
            else:
                peak = max(peak, total)
        out[mark] = (at_begin, total, max(peak, at_begin))
    return out


def _fake_group(dp: int) -> None:
    import torch.testing._internal.distributed.fake_pg  # noqa: F401  (registers "fake")
    from torch.testing._internal.distributed.fake_pg import FakeStore
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=dp)
    parallel_state.initialize_model_parallel(1, 1)


def _train(dp: int, bf16: bool, config: TransformerConfig) -> int:
    """Model, optimizer, two steps, each phase inside a ``record_function`` mark;
    returns the number of parameters."""
    with record_function("model"):
        torch.manual_seed(0)
        model = GPTModel(config)
        if bf16:
            model = Float16Module(model, torch.bfloat16)
    with record_function("build"):
        optimizer = get_megatron_optimizer([model], OptimizerConfig(
            lr=1e-4, bf16=bf16, use_distributed_optimizer=True))
    s = config.max_position_embeddings
    tokens = torch.randint(0, config.padded_vocab_size, (2, s + 1))
    for step in ("step1", "step2"):
        optimizer.zero_grad()
        model(tokens[:, :-1], torch.arange(s).expand(2, s), None,
              labels=tokens[:, 1:]).float().mean().backward()
        with record_function(step):
            optimizer.step()
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def measure(dp: int, bf16: bool, num_layers: int = 4, hidden_size: int = 256,
            vocab_size: int = 8192, seq_length: int = 64) -> MemoryReport:
    """Build a GPT and its distributed optimizer on rank 0 of a fake DP group of ``dp``."""
    config = TransformerConfig(num_layers=num_layers, hidden_size=hidden_size,
                               num_attention_heads=4, padded_vocab_size=vocab_size,
                               max_position_embeddings=seq_length, hidden_dropout=0.0,
                               attention_dropout=0.0)
    _fake_group(dp)
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            n = _train(dp, bf16, config)
    finally:
        parallel_state.destroy_model_parallel()
        dist.destroy_process_group()
    sums = _running_sums(prof, ["model", "build", "step1", "step2"])
    model_bytes = sums["model"][1]
    build = sums["build"][1] - sums["build"][0]
    first = sums["step1"][1] - sums["step1"][0]
    later_begin, later_end, later_peak = sums["step2"]
    return MemoryReport(n, dp, "bf16" if bf16 else "fp32", model_bytes, build, first,
                        sums["step1"][1], later_end - later_begin, later_peak - later_begin,
                        zero1_bytes(n, dp, bf16))


def main(argv: list[str] | None = None) -> MemoryReport:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dp", type=int, default=8)
    parser.add_argument("--fp32", action="store_true", help="fp32 parameters (default bf16)")
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    r = measure(args.dp, not args.fp32, args.num_layers, args.hidden_size, args.vocab_size)
    if args.json:
        print(json.dumps({**asdict(r), "measured_bytes": r.measured_bytes, "ratio": r.ratio}))
        return r
    print(f"distributed optimizer, {r.dtype} GPT of {r.params:,} parameters, rank 0 of DP {r.dp}")
    print(f"  model parameters            {r.model_bytes / GiB:9.4f} GiB")
    print(f"  + optimizer build (buffers) {r.build_bytes / GiB:9.4f} GiB")
    print(f"  + first step (Adam state)   {r.first_step_bytes / GiB:9.4f} GiB")
    print(f"  = held after the first step {r.measured_bytes / GiB:9.4f} GiB   "
          "(with anything a backward left)")
    print(f"  ZeRO-1 formula              {r.formula_bytes / GiB:9.4f} GiB   "
          f"(measured / formula {r.ratio:.4f})")
    print(f"  a later step: net {r.later_step_net_bytes:,} bytes, transient peak "
          f"{r.later_step_peak_bytes:,} bytes ({r.later_step_peak_bytes / r.formula_bytes:.2%} "
          f"of the formula); peak / formula "
          f"{(r.measured_bytes + r.later_step_peak_bytes) / r.formula_bytes:.4f}")
    return r


if __name__ == "__main__":
    main()
