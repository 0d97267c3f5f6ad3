"""Training-step time of one fixed GPT model under TP2, PP2 and DP2 against one process.

Every configuration trains the same model on the same global batch (``--global-batch-size``
sequences per step, micro-batches of ``--micro-batch-size``), each rank with one thread,
on gloo CPU ranks spawned here (the single-process reference runs the same code path as
a 1-rank world). A step is forward + backward + gradient reductions + AdamW; its time is
the median over ``--steps`` steps (after ``--warmup``), measured between barriers; all
configurations are run ``--repeats`` times round-robin and each keeps its fastest round.

Printed ratios are step time / single-process step time (below 1 = faster). On a 2-core
machine TP2/DP2 can at best halve the compute; PP2 with few micro-batches pays the
pipeline bubble, ``(P - 1) / (M + P - 1)`` of the step.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/parallel_scaling.py --steps 5
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
from megatron.core.tensor_parallel.random import model_parallel_seed  # noqa: E402
from megatron.model.config import TransformerConfig  # noqa: E402
from megatron.model.gpt_model import GPTModel  # noqa: E402
from megatron.optimizer import OptimizerConfig, get_megatron_optimizer  # noqa: E402

# name -> (world size, TP, PP); DP = world / (TP * PP)
CONFIGS = {"single": (1, 1, 1), "TP2": (2, 2, 1), "PP2": (2, 1, 2), "DP2": (2, 1, 1)}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num-layers", type=int, default=4)
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--num-attention-heads", type=int, default=8)
    p.add_argument("--seq-length", type=int, default=256)
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--global-batch-size", type=int, default=8)
    p.add_argument("--micro-batch-size", type=int, default=2)
    p.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per configuration")
    p.add_argument("--repeats", type=int, default=2,
                   help="rounds over all configurations; the fastest round of each is kept")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    return p.parse_args(argv)


def _forward_step(data_iterator, model):
    tokens = next(data_iterator)  # [b, s + 1]
    b, s = tokens.shape[0], tokens.shape[1] - 1
    output = model(tokens[:, :-1], torch.arange(s).expand(b, s), None, labels=tokens[:, 1:])

    def loss_func(out):
        loss = out.float().mean()
        return loss, {"lm loss": loss.detach()}
    return output, loss_func


def _build(a: argparse.Namespace) -> torch.nn.Module:
    config = TransformerConfig(num_layers=a.num_layers, hidden_size=a.hidden_size,
                               num_attention_heads=a.num_attention_heads,
                               padded_vocab_size=a.vocab_size,
                               max_position_embeddings=a.seq_length, hidden_dropout=0.0,
                               attention_dropout=0.0)
    return GPTModel(config, pre_process=parallel_state.is_pipeline_first_stage(),
                    post_process=parallel_state.is_pipeline_last_stage())


def _time_steps(a: argparse.Namespace) -> list[float]:
    """Train on random tokens; the wall time of each step on this rank."""
    model_parallel_seed(1234)
    model = _build(a)
    optimizer = get_megatron_optimizer([model], OptimizerConfig(lr=1e-4))
    schedule = get_forward_backward_func()
    dp = parallel_state.get_data_parallel_world_size()
    num_mb = a.global_batch_size // (a.micro_batch_size * dp)
    g = torch.Generator().manual_seed(parallel_state.get_data_parallel_rank())
    times = []
    for _ in range(a.warmup + a.steps):
        batches = [torch.randint(0, a.vocab_size, (a.micro_batch_size, a.seq_length + 1),
                                 generator=g) for _ in range(num_mb)]
        dist.barrier()
        start = time.perf_counter()
        optimizer.zero_grad()
        schedule(forward_step_func=_forward_step, data_iterator=iter(batches), model=[model],
                 num_microbatches=num_mb, seq_length=a.seq_length,
                 micro_batch_size=a.micro_batch_size)
        finalize_model_grads([model])
        optimizer.step()
        dist.barrier()
        times.append(time.perf_counter() - start)
    return times[a.warmup:]


def _rank_main(rank: int, world: int, tp: int, pp: int, init_file: str,
               a: argparse.Namespace, results) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(minutes=5))
    try:
        parallel_state.initialize_model_parallel(tp, pp)
        times = _time_steps(a)
        if rank == 0:
            results.put(times)
    finally:
        dist.destroy_process_group()


def measure(name: str, a: argparse.Namespace) -> float:
    """Median step time (seconds) of one configuration."""
    world, tp, pp = CONFIGS[name]
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "rendezvous")
        procs = [ctx.Process(target=_rank_main, args=(r, world, tp, pp, init_file, a, results))
                 for r in range(world)]
        for p in procs:
            p.start()
        times = results.get(timeout=1800)
        for p in procs:
            p.join()
        if any(p.exitcode != 0 for p in procs):
            raise RuntimeError(f"{name}: a rank exited with {[p.exitcode for p in procs]}")
    return statistics.median(times)


def main(argv=None) -> None:
    a = parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = "1"
    if a.global_batch_size % (2 * a.micro_batch_size) != 0:
        raise SystemExit("--global-batch-size must be divisible by 2 x --micro-batch-size")
    print(f"GPT {a.num_layers} layers, hidden {a.hidden_size}, heads {a.num_attention_heads}, "
          f"seq {a.seq_length}, vocab {a.vocab_size}; global batch {a.global_batch_size} in "
          f"micro-batches of {a.micro_batch_size}; {os.cpu_count()} CPU cores, 1 thread/rank; "
          f"median of {a.steps} steps, best of {a.repeats} rounds", flush=True)
    names = ["single"] + [n for n in a.configs if n != "single"]
    # Round-robin rounds, best round kept: load from other processes on the machine only
    # ever slows a round down, so the minimum is the least disturbed measurement.
    rounds = [{name: measure(name, a) for name in names} for _ in range(a.repeats)]
    step = {name: min(r[name] for r in rounds) for name in names}
    print(f"{'config':<8}{'ranks':>6}{'step ms':>10}{'ratio':>8}{'speedup':>9}")
    for name in names:
        ratio = step[name] / step["single"]
        print(f"{name:<8}{CONFIGS[name][0]:>6}{step[name] * 1e3:>10.1f}{ratio:>8.2f}"
              f"{1 / ratio:>8.2f}x", flush=True)


if __name__ == "__main__":
    main()
