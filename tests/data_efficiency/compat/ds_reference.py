"""Random schedule configs and DeepSpeed's answers for them (the reference tables).

``python tests/data_efficiency/compat/ds_reference.py`` (with deepspeed installed, see
requirements-peers.txt) rewrites ``ds_reference.npz`` beside this file: thousands of random
configs of the curriculum pacing, the random-LTD kept length with Megatron-DeepSpeed's
consumed-token count, and the percentile prefix of DeepSpeed's data sampler, each with the
value DeepSpeed computes. The test compares ours against the stored table always, and
against a fresh DeepSpeed run when deepspeed is importable.

Megatron-DeepSpeed itself cannot be imported here (it is a training script tree); its
consumed-token rule from megatron/training.py is restated in ``mds_tokens_per_step``.
"""
from __future__ import annotations

import os
import sys

import numpy as np

TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ds_reference.npz")
STEPS = 12          # steps sampled per config
LEVELS = 5          # most fixed_discrete levels
KINDS = ("fixed_linear", "fixed_root", "fixed_discrete")
ROOTS = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0)


def _steps(rng, total: int, first: int) -> np.ndarray:
    """Sorted sample of steps: the start, around the end of the schedule, random, far beyond."""
    fixed = [first, first + 1, total - 1, total, total + 1, 2 * total, 10 * total + 7]
    rand = rng.integers(first, 2 * total + 65, size=STEPS - len(fixed))
    return np.sort(np.maximum(np.array(fixed + list(rand)), first))


def curriculum_cases(rng, n: int) -> dict[str, np.ndarray]:
    kind = rng.integers(0, 3, n)
    d_min = rng.integers(1, 400, n)
    d_max = d_min + np.where(rng.random(n) < 0.1, 0, rng.integers(0, 3000, n))
    step = rng.choice([1, 2, 3, 5, 7, 8, 16, 32, 64], n)
    total = rng.integers(1, 3000, n)
    root = rng.choice(ROOTS, n)
    levels = np.full((n, LEVELS), -1, dtype=np.int64)
    max_step = np.full((n, LEVELS - 1), -1, dtype=np.int64)
    steps = np.zeros((n, STEPS), dtype=np.int64)
    for i in range(n):
        k = int(rng.integers(2, LEVELS + 1))      # DeepSpeed needs two levels at least
        levels[i, :k] = rng.integers(1, int(d_max[i] * 1.3) + 2, k)
        max_step[i, :k - 1] = np.sort(rng.choice(np.arange(1, 3000), k - 1, replace=False))
        span = int(max_step[i, k - 2]) if kind[i] == 2 else int(total[i])
        steps[i] = _steps(rng, span, 1)
    return dict(kind=kind, d_min=d_min, d_max=d_max, step=step, total=total, root=root,
                levels=levels, max_step=max_step, steps=steps)


def random_ltd_cases(rng, n: int) -> dict[str, np.ndarray]:
    r_min = np.where(rng.random(n) < 0.05, rng.integers(1, 16, n), rng.integers(1, 700, n))
    r_max = r_min + rng.integers(0, 3500, n)
    per_step = rng.choice([1, 3, 7, 8, 16, 32, 64], n)
    total = rng.integers(1, 5000, n)
    layers = rng.integers(2, 49, n)
    drop = np.array([rng.integers(1, int(x) + 1) for x in layers])
    gbs = rng.integers(1, 1025, n)
    steps = np.stack([_steps(rng, int(t), 0) for t in total])
    full = rng.random((n, STEPS)) < 0.5
    seq = np.where(full, r_max[:, None], rng.integers(1, r_max[:, None] + 1, (n, STEPS)))
    return dict(r_min=r_min, r_max=r_max, per_step=per_step, total=total, layers=layers,
                drop=drop, gbs=gbs, steps=steps, seq=seq)


def percentile_cases(rng, n: int) -> dict[str, np.ndarray]:
    num = rng.integers(1, 5000, n)
    d_max = rng.choice([100, 100, 100, 10, 50, 1000], n)
    p = np.array([rng.choice([0, 1, int(m) - 1, int(m), int(rng.integers(0, int(m) + 1))])
                  for m in d_max])
    rows = rng.integers(1, 50, n)
    return dict(num=num, d_max=d_max, p=p, rows=rows)


def all_cases(seed: int, n: int) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {"cl": curriculum_cases(rng, n), "ltd": random_ltd_cases(rng, n),
            "pct": percentile_cases(rng, n)}


def discrete_lists(levels: np.ndarray, max_step: np.ndarray) -> tuple[list[int], list[int]]:
    k = int((levels >= 0).sum())
    return [int(x) for x in levels[:k]], [int(x) for x in max_step[:k - 1]]


def mds_tokens_per_step(gbs: int, seq: int, layers: int, drop: int, kept: int) -> int:
    """Megatron-DeepSpeed's megatron/training.py: actual_seq_length, rounded per sequence."""
    actual = seq
    if kept < actual:
        actual = (actual * (layers - drop) + kept * drop) // layers
    return gbs * actual


def percentile_rows(num: int, rows: int, seed: int) -> list[np.ndarray]:
    """A random partition of sample ids 0..num-1 into at most ``rows`` value rows."""
    cuts = np.sort(np.random.default_rng(seed).choice(np.arange(1, num), min(rows, num) - 1,
                                                       replace=False)) if num > 1 else []
    return np.split(np.arange(num), cuts)


# -- DeepSpeed's answers -------------------------------------------------------------------
def deepspeed_curriculum(c: dict[str, np.ndarray]) -> np.ndarray:
    from deepspeed.runtime.data_pipeline.curriculum_scheduler import CurriculumScheduler
    out = np.zeros_like(c["steps"])
    for i in range(len(c["kind"])):
        kind = KINDS[int(c["kind"][i])]
        if kind == "fixed_discrete":
            levels, max_step = discrete_lists(c["levels"][i], c["max_step"][i])
            sc = {"difficulty": levels, "max_step": max_step}
        else:
            sc = {"total_curriculum_step": int(c["total"][i]),
                  "difficulty_step": int(c["step"][i]), "root_degree": float(c["root"][i])}
        ds = CurriculumScheduler({"min_difficulty": int(c["d_min"][i]),
                                  "max_difficulty": int(c["d_max"][i]),
                                  "schedule_type": kind, "schedule_config": sc})
        wanted = {int(t) for t in c["steps"][i]}
        got = {}
        for t in range(1, int(c["steps"][i].max()) + 1):   # every step: the latch needs them all
            d = ds.update_difficulty(t)
            if t in wanted:
                got[t] = d
        out[i] = [got[int(t)] for t in c["steps"][i]]
    return out


def deepspeed_random_ltd(c: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    from deepspeed.runtime.data_pipeline.data_routing.scheduler import RandomLTDScheduler
    kept = np.zeros_like(c["steps"])
    tokens = np.zeros_like(c["steps"])
    for i in range(len(c["r_min"])):
        ds = RandomLTDScheduler({
            "total_layer_num": int(c["layers"][i]), "random_ltd_layer_num": int(c["drop"][i]),
            "global_batch_size": int(c["gbs"][i]),
            "layer_token_lr_schedule": {"enabled": False},
            "random_ltd_schedule": {"min_value": int(c["r_min"][i]),
                                    "max_value": int(c["r_max"][i]),
                                    "schedule_type": "fixed_linear",
                                    "schedule_config": {"require_steps": int(c["total"][i]),
                                                        "seq_per_step": int(c["per_step"][i])}}})
        for j, t in enumerate(c["steps"][i]):
            ds.update_seq(int(t))
            kept[i, j] = ds.get_current_seq()
            tokens[i, j] = mds_tokens_per_step(int(c["gbs"][i]), int(c["seq"][i, j]),
                                               int(c["layers"][i]), int(c["drop"][i]),
                                               int(kept[i, j]))
    return kept, tokens


def deepspeed_percentile(c: dict[str, np.ndarray]) -> np.ndarray:
    from deepspeed.runtime.data_pipeline.data_sampling.data_sampler import DeepSpeedDataSampler
    out = np.zeros(len(c["num"]), dtype=np.int64)
    for i in range(len(c["num"])):
        sampler = DeepSpeedDataSampler.__new__(DeepSpeedDataSampler)   # only the prefix rule
        sampler.data_1epoch_size = None
        sampler.curriculum_index_to_sample = {"m": percentile_rows(int(c["num"][i]),
                                                                   int(c["rows"][i]), i)}
        sampler.data_efficiency_config = {"data_sampling": {"curriculum_learning": {
            "curriculum_metrics": {"m": {"max_difficulty": int(c["d_max"][i])}}}}}
        got = sampler.get_sample_based_on_metric_percentile("m", 0, int(c["p"][i]))
        out[i] = 0 if got is None else len(got)
    return out


def deepspeed_results(cases: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    kept, tokens = deepspeed_random_ltd(cases["ltd"])
    return {"cl": deepspeed_curriculum(cases["cl"]), "ltd_kept": kept, "ltd_tokens": tokens,
            "pct": deepspeed_percentile(cases["pct"])}


def write_table(path: str = TABLE, seed: int = 2024, n: int = 2000) -> None:
    import deepspeed
    cases = all_cases(seed, n)
    results = deepspeed_results(cases)
    flat = {f"{g}.{k}": v for g, d in cases.items() for k, v in d.items()}
    flat.update({f"ds.{k}": v for k, v in results.items()})
    np.savez_compressed(path, seed=seed, n=n, deepspeed_version=deepspeed.__version__, **flat)


def read_table(path: str = TABLE) -> tuple[dict, dict, str]:
    with np.load(path) as z:
        cases: dict[str, dict[str, np.ndarray]] = {"cl": {}, "ltd": {}, "pct": {}}
        results = {}
        for key in z.files:
            group, _, name = key.partition(".")
            if group == "ds":
                results[name] = z[key]
            elif group in cases:
                cases[group][name] = z[key]
        return cases, results, str(z["deepspeed_version"])


if __name__ == "__main__":
    write_table(*sys.argv[1:2])
    print(f"wrote {TABLE} ({os.path.getsize(TABLE)} bytes)")
