"""Benchmark the curriculum sampler at the paper's GPT-3 scale (issue 5's acceptance).

Builds a synthetic ``voc`` index of 173 million samples with 100 distinct values in the
analyzer's on-disk format (written chunk by chunk with a counting sort, so building it
needs little memory), opens it memory-mapped with ``index_io.MetricIndex.open``, and runs
the paper's schedule (``fixed_root``, root 2, percentile 1 -> 100 over 110,000 steps,
global batch 512) for every step of the schedule plus a tail past its end. It prints:

* median / p99 / max time to produce one 512-sample global batch,
* time of the batches that admit a new difficulty slice (a new cluster),
* the same per-batch figures in thread CPU time, which a busy shared machine does not
  inflate (wall time includes waiting for a core),
* time to the first batch (opening the index, building the sampler, drawing step 1),
* anonymous memory (``RssAnon``: excludes the memory-mapped index pages) before/after,
  its peak over the run and whether it grows in the tail,
* bytes written by the process while sampling (``/proc/self/io`` wchar, write_bytes).

A reference measured in the same run: a bare gather of 512 random ids from the mapped
``sorted_samples`` (the floor any sampler pays). DeepSpeed's ``DeepSpeedDataSampler`` is
not measured here (``deepspeed`` is not a dependency), so no figure is printed for it.

Usage: python benchmarks/curriculum_sampler.py [--samples 173000000] [--dir DIR] [--keep]
The index files stay in page cache after being written, as on a training node that has
read them before; the first pass over a cold disk would be slower.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron.data_efficiency.analyzer import index_io  # noqa: E402
from megatron.data_efficiency.config import config_from_dict  # noqa: E402
from megatron.data_efficiency.curriculum.sampler import (CurriculumSampler,  # noqa: E402
                                                         SamplerMetric)
from megatron.data_efficiency.step_plan import RunShape, StepPlanner  # noqa: E402

CHUNK = 1 << 23
NUM_VALUES = 100


def _values_of(ids: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random value class (0..99) of each sample id."""
    h = (ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)
    return (h % np.uint64(NUM_VALUES)).astype(np.int64)


def build_index(folder: str, n: int) -> None:
    """Write a ``voc``-like float index of ``n`` samples, ``NUM_VALUES`` distinct values."""
    table = np.sort(np.random.default_rng(0).random(NUM_VALUES) * 50.0 + 10.0)
    counts = np.zeros(NUM_VALUES, dtype=np.int64)
    for a in range(0, n, CHUNK):
        counts += np.bincount(_values_of(np.arange(a, min(n, a + CHUNK))), minlength=NUM_VALUES)
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    tmp = index_io.new_tmp_dir(folder)
    s2m = index_io.create_npy(os.path.join(tmp, "sample_to_metric.npy"), np.float64, n)
    srt = index_io.create_npy(os.path.join(tmp, "sorted_samples.npy"), np.int64, n)
    fill = offsets[:-1].copy()
    for a in range(0, n, CHUNK):
        ids = np.arange(a, min(n, a + CHUNK), dtype=np.int64)
        cls = _values_of(ids)
        s2m[a:a + len(ids)] = table[cls]
        order = np.argsort(cls, kind="stable")          # ids stay ascending inside a class
        per = np.bincount(cls, minlength=NUM_VALUES)
        start = np.concatenate(([0], np.cumsum(per)))
        for v in np.flatnonzero(per):
            srt[fill[v]:fill[v] + per[v]] = ids[order[start[v]:start[v + 1]]]
            fill[v] += per[v]
    s2m.flush()
    srt.flush()
    del s2m, srt
    index_io.save_npy(os.path.join(tmp, "values.npy"), table)
    index_io.save_npy(os.path.join(tmp, "offsets.npy"), offsets)
    index_io.finalize_index_dir(tmp, folder, "voc", "synthetic")


def proc_status(key: str) -> int:
    """A ``/proc/self/status`` field in bytes (kB fields)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return -1


def proc_io() -> dict[str, int]:
    with open("/proc/self/io") as f:
        return {k: int(v) for k, v in (line.split(": ") for line in f)}


def run(folder: str, steps: int, total_steps: int) -> dict:
    anon0 = proc_status("RssAnon")
    t0 = time.perf_counter()
    index = index_io.MetricIndex.open(folder, "synthetic")
    config = config_from_dict({"enabled": True, "data_sampling": {
        "enabled": True, "curriculum_learning": {"enabled": True, "curriculum_metrics": {
            "voc": {"index_path": folder, "difficulty_type": "percentile",
                    "min_difficulty": 1, "max_difficulty": 100, "schedule_type": "fixed_root",
                    "schedule_config": {"total_curriculum_step": total_steps,
                                        "difficulty_step": 1, "root_degree": 2}}}}}})
    planner = StepPlanner(config, RunShape(global_batch_size=512, seq_length=2048,
                                           num_layers=24))
    sampler = CurriculumSampler([SamplerMetric("voc", index, "percentile", 100)],
                                planner.difficulties, global_batch_size=512,
                                micro_batch_size=4, data_parallel_rank=0,
                                data_parallel_size=8, seed=1234)
    sampler.next_global_batch()
    first = time.perf_counter() - t0
    times = np.empty(steps - 1)
    cpu = np.empty(steps - 1)
    admits = np.zeros(steps - 1, dtype=bool)
    anon_peak, anon_mid = proc_status("RssAnon"), 0
    io0 = proc_io()
    for i in range(steps - 1):
        c = sampler.num_clusters
        t, c0 = time.perf_counter(), time.thread_time()
        sampler.next_global_batch()
        times[i] = time.perf_counter() - t
        cpu[i] = time.thread_time() - c0
        admits[i] = sampler.num_clusters != c
        if i % 5000 == 0:
            anon_peak = max(anon_peak, proc_status("RssAnon"))
            if i <= total_steps:
                anon_mid = proc_status("RssAnon")
    io1 = proc_io()
    anon_end = proc_status("RssAnon")
    return {"first": first, "times": times, "cpu": cpu, "admits": admits, "anon0": anon0,
            "anon_mid": anon_mid, "anon_end": anon_end,
            "anon_peak": max(anon_peak, anon_end), "clusters": sampler.num_clusters,
            "wchar": io1["wchar"] - io0["wchar"],
            "write_bytes": io1["write_bytes"] - io0["write_bytes"],
            "admitted": sampler.admitted_samples, "index": index}


def floor_reference(index, reps: int = 20000) -> float:
    """Median time of a bare gather of 512 random ids from the mapped sorted_samples."""
    rng = np.random.default_rng(1)
    pos = rng.integers(0, index.num_samples, size=(reps, 512))
    t = np.empty(reps)
    for i in range(reps):
        a = time.perf_counter()
        np.asarray(index.sorted_samples[pos[i]])
        t[i] = time.perf_counter() - a
    return float(np.median(t))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=173_000_000)
    ap.add_argument("--total-steps", type=int, default=110_000)
    ap.add_argument("--tail-steps", type=int, default=10_000, help="steps after the schedule")
    ap.add_argument("--dir", default=None, help="where to build the index (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the index for a re-run")
    args = ap.parse_args()
    base = args.dir or tempfile.mkdtemp(prefix="cl_bench_")
    folder = os.path.join(base, "voc")
    try:
        if not os.path.isdir(folder):
            t = time.perf_counter()
            build_index(folder, args.samples)
            print(f"built index: {args.samples:,} samples in {time.perf_counter() - t:.1f} s "
                  f"at {folder}")
        r = run(folder, args.total_steps + args.tail_steps, args.total_steps)
        report(r, floor_reference(r["index"]))
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(base, ignore_errors=True)


def report(r: dict, floor: float) -> None:
    us = r["times"] * 1e6
    adm = us[r["admits"]]
    steady = us[~r["admits"]]
    mib = 1 / 2**20
    print(f"steps timed: {len(us) + 1:,} (global batch 512), clusters created: {r['clusters']}, "
          f"admitted samples at the end: {r['admitted']:,}")
    print(f"time to first batch:          {r['first'] * 1e3:8.2f} ms   (target < 100 ms)")
    print(f"per batch, median:            {np.median(us):8.1f} us   (target < 100 us)")
    print(f"per batch, p99 / max:         {np.percentile(us, 99):8.1f} / {us.max():.1f} us")
    print(f"per batch without new slice:  median {np.median(steady):.1f} us, "
          f"max {steady.max():.1f} us")
    cpu = r["cpu"] * 1e6
    print(f"same, thread CPU time (excludes waiting for a core on a busy machine): median "
          f"{np.median(cpu):.1f} us, p99 {np.percentile(cpu, 99):.1f} us, max {cpu.max():.1f} us; "
          f"new slice max {cpu[r['admits']].max():.1f} us; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")
    print(f"batch admitting a new slice:  median {np.median(adm):.1f} us, max {adm.max():.1f} us "
          f"over {len(adm)} changes (target < 10 ms)")
    print(f"reference, bare 512-id gather from the mapped index: {floor * 1e6:.1f} us "
          f"(median batch = {np.median(us) / (floor * 1e6):.1f}x that floor)")
    print(f"anonymous memory (RssAnon, excludes mapped index pages): start "
          f"{r['anon0'] * mib:.1f} MiB, end of schedule {r['anon_mid'] * mib:.1f} MiB, "
          f"end {r['anon_end'] * mib:.1f} MiB, peak {r['anon_peak'] * mib:.1f} MiB; "
          f"sampler's share <= {(r['anon_peak'] - r['anon0']) * mib:.1f} MiB (target < 300 MB)")
    print(f"bytes written while sampling: wchar {r['wchar']}, write_bytes {r['write_bytes']} "
          f"(target 0)")


if __name__ == "__main__":
    main()
