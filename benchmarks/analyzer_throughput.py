"""Throughput of tools/analyze_data.py on a synthetic 100M-token corpus, 1 process vs 2 MPI ranks.

    python benchmarks/analyzer_throughput.py [--tokens 100000000] [--workdir DIR]

Writes a token store (uint16 ids drawn from a Zipf law over a 50257-token vocabulary,
document lengths uniform in 16..1024) and runs the analyzer end to end (read, compute, reduce,
write) for ``seqlen`` and ``voc`` (voc includes its token-count pass) at document granularity,
first as one process and then under ``mpiexec -n 2``. It prints tokens/s over the analyzer's
own wall time (``elapsed_s``: from the barrier every rank passes once its interpreter, imports
and MPI are up, to the last rank's return after the last index folder is renamed and the
shard files removed; the "counting process start" figure adds interpreter and mpiexec
start-up), tokens per CPU-second summed over ranks, peak RSS per rank, and each rank's wall
time per phase (setup, count pass + Allreduce, value pass, sample sort + writes, cleanup;
waits inside a phase's collectives included). As bandwidth references it prints the rate
of one plain NumPy pass over the memory-mapped token array, and the combined rate of two
processes each summing its half at the same time (what two ranks can read at most). Ratios
are against numbers measured in the same run; the load average is printed because the
machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from megatron.data.indexed_dataset import MMapIndexedDataset, write_index  # noqa: E402

VOCAB = 50257


def make_corpus(prefix: str, num_tokens: int, seed: int = 0) -> None:
    """Zipf-distributed uint16 tokens in documents of 16..1024 tokens, written in chunks."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(16, 1025, num_tokens // 16 + 1)
    sizes = sizes[:np.searchsorted(np.cumsum(sizes), num_tokens) + 1]
    sizes[-1] -= int(sizes.sum()) - num_tokens  # exactly num_tokens in all
    if sizes[-1] <= 0:
        sizes = sizes[:-1]
        sizes[-1] += num_tokens - int(sizes.sum())
    tmp_bin = prefix + ".bin.tmp"
    with open(tmp_bin, "wb") as f:
        for a in range(0, num_tokens, 1 << 24):
            n = min(1 << 24, num_tokens - a)
            f.write(((rng.zipf(1.2, n) - 1) % VOCAB).astype(np.uint16).tobytes())
    write_index(prefix + ".idx.tmp", np.uint16, sizes, np.arange(len(sizes) + 1))
    os.replace(tmp_bin, prefix + ".bin")
    os.replace(prefix + ".idx.tmp", prefix + ".idx")


def numpy_read_rate(prefix: str, repeats: int = 3) -> float:
    """Tokens/s of one plain NumPy pass (a sum) over the memory-mapped token array, best of n."""
    tokens = MMapIndexedDataset(prefix).tokens
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        tokens.sum(dtype=np.int64)
        best = min(best, time.perf_counter() - t0)
    return len(tokens) / best


def _read_half(prefix: str, part: int, parts: int, barrier, queue, repeats: int) -> None:
    tokens = MMapIndexedDataset(prefix).tokens
    lo, hi = part * len(tokens) // parts, (part + 1) * len(tokens) // parts
    best = float("inf")
    for _ in range(repeats):
        barrier.wait()  # every process reads at the same time
        t0 = time.perf_counter()
        tokens[lo:hi].sum(dtype=np.int64)
        best = min(best, time.perf_counter() - t0)
    queue.put(best)


def parallel_read_rate(prefix: str, procs: int = 2, repeats: int = 3) -> float:
    """Combined tokens/s of ``procs`` processes each summing its share of the tokens at once."""
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=_read_half, args=(prefix, p, procs, barrier, queue, repeats))
               for p in range(procs)]
    for w in workers:
        w.start()
    slowest = max(queue.get() for _ in workers)
    for w in workers:
        w.join()
    return len(MMapIndexedDataset(prefix).tokens) / slowest


def run_tool(prefix: str, metric: str, ranks: int, workdir: str) -> dict:
    """One analyzer run; returns the tool's stats (elapsed_s, per-rank peak RSS)."""
    out, stats = os.path.join(workdir, f"out-{metric}-{ranks}"), os.path.join(workdir, "stats.json")
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, os.path.join(ROOT, "tools", "analyze_data.py"), "--data-path", prefix,
           "--save-path", out, "--metrics", metric, "--quiet", "--stats-json", stats, "--force"]
    if ranks > 1:
        mpiexec = shutil.which("mpiexec") or os.path.join(os.path.dirname(sys.executable), "mpiexec")
        cmd = [mpiexec, "-n", str(ranks)] + cmd
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    wall = time.perf_counter() - t0
    with open(stats) as f:
        result = json.load(f)
    result["process_wall_s"] = wall
    shutil.rmtree(out, ignore_errors=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=100_000_000)
    p.add_argument("--workdir", help="where the corpus is written (default: a temp dir, removed)")
    p.add_argument("--repeats", type=int, default=2,
                   help="runs per configuration, 1 and 2 ranks alternating (best is reported)")
    args = p.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="analyzer_bench_")
    os.makedirs(workdir, exist_ok=True)
    prefix = os.path.join(workdir, f"zipf_{args.tokens}")
    try:
        if not os.path.exists(prefix + ".idx"):
            t0 = time.perf_counter()
            make_corpus(prefix, args.tokens)
            print(f"corpus: {args.tokens:,} tokens written in {time.perf_counter() - t0:.1f} s -> {prefix}")
        print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        read = numpy_read_rate(prefix)
        print(f"NumPy single-pass read (bandwidth reference): {read / 1e6:,.0f} M tokens/s; two "
              f"processes reading a half each at once: {parallel_read_rate(prefix) / 1e6:,.0f} M tokens/s")
        rates = {}
        for metric in ("seqlen", "voc"):
            # 1-rank and 2-rank runs alternate, so a burst of outside load on a shared
            # machine falls on both configurations rather than on one of them.
            runs = {1: [], 2: []}
            for _ in range(args.repeats):
                for ranks in (1, 2):
                    runs[ranks].append(run_tool(prefix, metric, ranks, workdir))
            for ranks in (1, 2):
                best = min(runs[ranks], key=lambda r: r["elapsed_s"])
                median = float(np.median([r["elapsed_s"] for r in runs[ranks]]))
                rate = args.tokens / best["elapsed_s"]
                rates[metric, ranks] = rate
                rss = ", ".join(f"{r['peak_rss_mb']:.0f}" for r in best["ranks"])
                cpu = sum(r["cpu_s"] for r in best["ranks"])
                print(f"{metric:7s} ranks={ranks}: {rate / 1e6:8,.0f} M tokens/s end to end "
                      f"({best['elapsed_s']:.2f} s; {args.tokens / best['process_wall_s'] / 1e6:,.0f} M/s "
                      f"counting process start), {rate / ranks / 1e6:,.0f} M/s per rank, "
                      f"{args.tokens / cpu / 1e6:,.0f} M/s per CPU-second, {rate / read:.2f}x NumPy read; "
                      f"peak RSS per rank [MiB]: {rss}; median of {args.repeats} runs {median:.2f} s")
                for r in best["ranks"]:
                    phases = " ".join(f"{k} {v:.3f}" for k, v in r.get("phases_s", {}).items())
                    print(f"    rank {r['rank']} phases [s]: {phases}")
        for metric in ("seqlen", "voc"):
            print(f"{metric}: 2 ranks / 1 rank = {rates[metric, 2] / rates[metric, 1]:.2f}x")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
