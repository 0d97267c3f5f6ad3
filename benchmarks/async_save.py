"""What a checkpoint save costs the training loop, written synchronously or in the background.

    OMP_NUM_THREADS=2 python benchmarks/async_save.py            # CPU, a 4-layer GPT
    python benchmarks/async_save.py --device-flags "--bf16" ...  # on a GPU machine

Three runs of ``pretrain_gpt.py`` on the same random-token store and model (``--ckpt-format
torch_dist``, metrics file at ``--log-interval 1``), alternated ``--repeats`` times:
``none`` saves only at the end, ``sync`` and ``async`` every ``--save-interval`` steps. The
save after step k is paid inside step k+1's logged iteration time (the loop logs step k, then
saves), so the cost per save is the mean iteration time of the steps that follow a save minus
that of the other steps of the same run; with ``--async-save`` it is the staging copy plus
whatever the background write takes from the step. Printed: seconds per save of each mode
and async / sync, plus each run's mean step time against ``none`` (writes that compete
with the training step show there).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from megatron.data.indexed_dataset import make_builder  # noqa: E402

VOCAB = 4096


def make_store(prefix: str, documents: int, length: int) -> None:
    """Random-token documents (the content does not matter to a save's cost)."""
    rng = np.random.default_rng(0)
    builder = make_builder(prefix + ".bin", VOCAB)
    for _ in range(documents):
        builder.add_item(rng.integers(1, VOCAB, size=length))
        builder.end_document()
    builder.finalize(prefix + ".idx")


def run(mode: str, args: argparse.Namespace, store: str, work: str) -> list[dict]:
    """One training run; its metrics file's step lines."""
    save = os.path.join(work, f"ckpt_{mode}")
    shutil.rmtree(save, ignore_errors=True)
    metrics = os.path.join(work, f"metrics_{mode}.jsonl")
    if os.path.exists(metrics):
        os.remove(metrics)
    interval = args.steps if mode == "none" else args.save_interval
    cmd = [sys.executable, os.path.join(ROOT, "pretrain_gpt.py"),
           "--num-layers", str(args.num_layers), "--hidden-size", str(args.hidden_size),
           "--num-attention-heads", "8", "--seq-length", "256",
           "--max-position-embeddings", "256", "--micro-batch-size", "4",
           "--global-batch-size", "4", "--train-iters", str(args.steps), "--lr", "1e-4",
           "--vocab-size", str(VOCAB), "--data-path", store, "--split", "100,0,0",
           "--eval-iters", "0", "--log-interval", "1", "--num-workers", "2",
           "--save", save, "--save-interval", str(interval), "--ckpt-format", "torch_dist",
           "--metrics-file", metrics, *args.device_flags.split()]
    if mode == "async":
        cmd.append("--async-save")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    with open(metrics) as f:
        lines = [json.loads(line) for line in f]
    shutil.rmtree(save, ignore_errors=True)
    return [line for line in lines if line.get("event") == "step"]


def summarize(steps: list[dict], save_interval: int, skip: int) -> tuple[float, float]:
    """(mean step time, added seconds per save) of one run; the first ``skip`` steps are
    warm-up."""
    after_save, other = [], []
    for line in steps:
        it = line["iteration"]
        if it <= skip:
            continue
        (after_save if (it - 1) % save_interval == 0 and it > 1 else other).append(
            line["iteration_time_s"])
    mean = statistics.mean(after_save + other)
    added = statistics.mean(after_save) - statistics.mean(other) if after_save else 0.0
    return mean, added


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-layers", type=int, default=4)
    p.add_argument("--hidden-size", type=int, default=512)
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--save-interval", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device-flags", default="", help="extra pretrain_gpt.py flags (the precision, say), split on spaces")
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="async_save_")
    try:
        store = os.path.join(work, "random_text_document")
        make_store(store, documents=400, length=2048)
        results: dict[str, list[tuple[float, float]]] = {"none": [], "sync": [], "async": []}
        for _ in range(args.repeats):
            for mode in results:
                steps = run(mode, args, store, work)
                results[mode].append(summarize(steps, args.save_interval, skip=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mean = {m: statistics.mean(r[0] for r in rs) for m, rs in results.items()}
    added = {m: statistics.mean(r[1] for r in rs) for m, rs in results.items()}
    print(f"GPT {args.num_layers} layers, hidden {args.hidden_size}, {args.steps} steps, a "
          f"torch_dist save every {args.save_interval}, {args.repeats} repeats")
    for m in ("sync", "async"):
        print(f"  {m:5s}: {added[m]:.3f} s added to the step after a save; mean step "
              f"{mean[m]:.3f} s = {mean[m] / mean['none']:.2f} x the run without saves")
    if added["sync"] > 0:
        print(f"  async / sync cost per save: {added['async'] / added['sync']:.2f}")


if __name__ == "__main__":
    main()
