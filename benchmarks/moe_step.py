"""Training-step time of a 4-expert MoE GPT against the dense GPT with the same active
parameters, and the all-to-all share of the step at expert-parallel size 2.

Top-1 routing gives every token one expert MLP of the dense model's width, so the dense
model (same layers, hidden and FFN sizes) has the MoE model's active parameters per
token. Configurations, all on the same global batch (``--global-batch-size`` sequences
in micro-batches of ``--micro-batch-size``):

* ``dense``: the dense model, one process;
* ``moe``: ``--num-experts`` experts in every other layer, one process;
* ``moe_ep2``: the MoE model on 2 gloo ranks (DP2 = EP2: each rank holds half of the
  experts and half of the batch); the time spent inside ``all_to_all_single`` (token
  exchange, forward and backward) is measured on each rank.

A step is forward + backward + gradient reductions + AdamW, timed between barriers; the
median over ``--steps`` steps after ``--warmup``, the best of ``--repeats`` round-robin
rounds. Printed: step times and their ratios against ``dense`` measured in the same run,
and the all-to-all share of the ``moe_ep2`` step. With ``--device cuda`` only ``dense``
and ``moe`` run (one GPU, one process).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/moe_step.py --steps 5
    .venv/bin/python benchmarks/moe_step.py --device cuda --num-experts 64 --hidden-size 1024 \\
        --num-attention-heads 16 --seq-length 2048 --micro-batch-size 4 --global-batch-size 8
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron.core import parallel_state  # noqa: E402
from megatron.core.distributed.finalize_model_grads import finalize_model_grads  # noqa: E402
from megatron.core.pipeline_parallel.schedules import get_forward_backward_func  # noqa: E402
from megatron.model.config import TransformerConfig  # noqa: E402
from megatron.model.gpt_model import GPTModel  # noqa: E402
from megatron.model.moe.aux_loss import set_aux_loss_grad_scale  # noqa: E402
from megatron.model.moe.config import MoEConfig, moe_layer_ids  # noqa: E402
from megatron.optimizer import OptimizerConfig, get_megatron_optimizer  # noqa: E402

# name -> (ranks, experts or None, expert-parallel size)
CONFIGS = {"dense": (1, False, 1), "moe": (1, True, 1), "moe_ep2": (2, True, 2)}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-layers", type=int, default=4)
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--num-attention-heads", type=int, default=8)
    p.add_argument("--seq-length", type=int, default=256)
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--num-experts", type=int, default=4)
    p.add_argument("--capacity-factor", type=float, default=1.0)
    p.add_argument("--disable-moe-token-dropping", action="store_true",
                   help="no capacity limit (every token reaches its expert)")
    p.add_argument("--global-batch-size", type=int, default=8)
    p.add_argument("--micro-batch-size", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    return p.parse_args(argv)


def _build(a: argparse.Namespace, moe: bool, ep: int) -> GPTModel:
    factor = None if a.disable_moe_token_dropping else a.capacity_factor
    moe_cfg = MoEConfig(num_experts=a.num_experts, moe_layer_ids=moe_layer_ids(a.num_layers, 2),
                        topk=1, train_capacity_factor=factor, eval_capacity_factor=factor,
                        expert_model_parallel_size=ep) if moe else None
    config = TransformerConfig(num_layers=a.num_layers, hidden_size=a.hidden_size,
                               num_attention_heads=a.num_attention_heads,
                               padded_vocab_size=a.vocab_size,
                               max_position_embeddings=a.seq_length, hidden_dropout=0.0,
                               attention_dropout=0.0, use_cpu_initialization=True,
                               params_dtype=torch.float32, moe=moe_cfg)
    return GPTModel(config)


def _forward_step(data_iterator, model):
    tokens = next(data_iterator)
    b, s = tokens.shape[0], tokens.shape[1] - 1
    pos = torch.arange(s, device=tokens.device).expand(b, s)
    output = model(tokens[:, :-1], pos, None, labels=tokens[:, 1:])

    def loss_func(out):
        loss = out.float().mean()
        return loss, {"lm loss": loss.detach()}
    return output, loss_func


class _AllToAllClock:
    """Wall time spent inside torch.distributed.all_to_all_single (the token exchange)."""

    def __init__(self) -> None:
        self.seconds, self._inner = 0.0, dist.all_to_all_single

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self._inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
    if dist.is_initialized():
        dist.barrier()


def time_steps(a: argparse.Namespace, moe: bool, ep: int) -> tuple[list[float], list[float]]:
    """(step times, all-to-all seconds per step) on this rank."""
    torch.manual_seed(1234)
    model = _build(a, moe, ep).to(a.device)
    optimizer = get_megatron_optimizer([model], OptimizerConfig(lr=1e-4))
    schedule = get_forward_backward_func()
    dp = parallel_state.get_data_parallel_world_size()
    num_mb = a.global_batch_size // (a.micro_batch_size * dp)
    set_aux_loss_grad_scale(1.0 / num_mb)
    g = torch.Generator().manual_seed(parallel_state.get_data_parallel_rank())
    clock = _AllToAllClock()
    dist.all_to_all_single = clock
    times, a2a = [], []
    try:
        for _ in range(a.warmup + a.steps):
            batches = [torch.randint(0, a.vocab_size, (a.micro_batch_size, a.seq_length + 1),
                                     generator=g).to(a.device) for _ in range(num_mb)]
            _sync(a.device)
            start, before = time.perf_counter(), clock.seconds
            optimizer.zero_grad()
            schedule(forward_step_func=_forward_step, data_iterator=iter(batches),
                     model=[model], num_microbatches=num_mb, seq_length=a.seq_length,
                     micro_batch_size=a.micro_batch_size)
            finalize_model_grads([model])
            optimizer.step()
            _sync(a.device)
            times.append(time.perf_counter() - start)
            a2a.append(clock.seconds - before)
    finally:
        dist.all_to_all_single = clock._inner
    return times[a.warmup:], a2a[a.warmup:]


def _rank_main(rank, world, ep, init_file, a, results) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(minutes=5))
    try:
        parallel_state.initialize_model_parallel(1, 1, expert_model_parallel_size=ep)
        times, a2a = time_steps(a, True, ep)
        results.put((rank, times, a2a))
    finally:
        dist.destroy_process_group()


def measure(name: str, a: argparse.Namespace) -> tuple[float, float]:
    """(median step seconds, median all-to-all share of the step) of one configuration."""
    world, moe, ep = CONFIGS[name]
    if world == 1:
        times, _ = time_steps(a, moe, ep)
        return statistics.median(times), 0.0
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "rendezvous")
        procs = [ctx.Process(target=_rank_main, args=(r, world, ep, init_file, a, results))
                 for r in range(world)]
        for p in procs:
            p.start()
        got = [results.get(timeout=1800) for _ in procs]
        for p in procs:
            p.join()
        if any(p.exitcode != 0 for p in procs):
            raise RuntimeError(f"{name}: a rank exited with {[p.exitcode for p in procs]}")
    step = statistics.median(got[0][1])
    share = statistics.median(max(r[2][i] for r in got) / got[0][1][i]
                              for i in range(len(got[0][1])))
    return step, share


def main(argv=None) -> None:
    a = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    names = ["dense", "moe"] + (["moe_ep2"] if a.device == "cpu" else [])
    print(f"GPT {a.num_layers} layers, hidden {a.hidden_size}, heads {a.num_attention_heads}, "
          f"seq {a.seq_length}, vocab {a.vocab_size}; MoE: {a.num_experts} experts in every "
          f"other layer, top-1, capacity factor "
          f"{'none' if a.disable_moe_token_dropping else a.capacity_factor}; global batch "
          f"{a.global_batch_size} in micro-batches of {a.micro_batch_size}; {a.device}; "
          f"median of {a.steps} steps, best of {a.repeats} rounds", flush=True)
    rounds = [{name: measure(name, a) for name in names} for _ in range(a.repeats)]
    best = {name: min((r[name] for r in rounds), key=lambda x: x[0]) for name in names}
    print(f"{'config':<9}{'ranks':>6}{'step ms':>10}{'vs dense':>10}{'all-to-all share':>18}")
    for name in names:
        step, share = best[name]
        a2a = f"{share * 100:.1f}%" if CONFIGS[name][0] > 1 else "-"
        print(f"{name:<9}{CONFIGS[name][0]:>6}{step * 1e3:>10.1f}"
              f"{step / best['dense'][0]:>10.2f}{a2a:>18}", flush=True)


if __name__ == "__main__":
    main()
