"""Random dynamic_batching cases and DeepSpeed's answers for them (the reference table).

``/path/to/python-with-deepspeed tests/data_efficiency/compat/ds_dynamic_batching.py``
rewrites ``ds_dynamic_batching.json`` beside this file: random seqlen arrays and settings
(max_tokens, min / max batch size, picking order, seed, units per step, a filter of ids),
each with what DeepSpeed 0.19.8's ``batch_by_seqlens`` returns (the units' sample ids,
the batch sizes, the batches' longest samples) and the LRs its ``VariableBatchSizeLR``
applies over a ``LambdaLR`` base schedule for ``STEPS`` steps, per scaling method. The
test compares ``packing.pack`` / ``scaled_lr`` against the stored table always, and
against DeepSpeed itself when it is importable.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ds_dynamic_batching.json")
STEPS = 7
BASE_LR = 0.01
METHODS = ("linear", "sqrt", "none")
ORDERS = ("dataloader", "seqlen", "random")


def base_lr_factor(step: int) -> float:
    """The base schedule's LambdaLR factor at ``step`` (a warmup then a decay)."""
    return min(1.0, (step + 1) / 3) / (1 + 0.25 * step)


def cases(rng: np.random.Generator, n: int) -> list[dict]:
    out = []
    for _ in range(n):
        size = int(rng.integers(6, 90))
        seqlens = rng.integers(1, 70, size)
        ids = None
        if rng.random() < 0.3:
            ids = np.sort(rng.choice(size, int(rng.integers(3, size + 1)), replace=False))
        out.append(dict(
            seqlens=seqlens.tolist(), max_tokens=int(rng.integers(40, 260)),
            units_per_batch=int(rng.choice([1, 2, 3, 4, 8])),
            min_batch_size=int(rng.choice([0, 1, 1, 1, 2, 3])),
            max_batch_size=[None, 0, 2, 4, 7][int(rng.integers(0, 5))],
            order=ORDERS[int(rng.integers(0, 3))], seed=int(rng.integers(0, 10_000)),
            ids=None if ids is None else ids.tolist()))
    return out


def deepspeed_answer(case: dict) -> dict:
    """DeepSpeed's packing and LRs of ``case`` (needs deepspeed importable)."""
    import torch
    from deepspeed.runtime.data_pipeline.data_sampling import variable_batch_size_and_lr as v
    try:
        mids, sizes, longest = v.batch_by_seqlens(
            case["seqlens"], case["max_tokens"], sequence_ids_per_mb=case["ids"],
            min_batch_size=case["min_batch_size"], max_batch_size=case["max_batch_size"],
            sequence_picking_order=case["order"], effective_batch_size=case["units_per_batch"],
            seed=case["seed"])
    except AssertionError:
        return {"error": True}
    lrs = {}
    for method in METHODS:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE_LR)
        base = torch.optim.lr_scheduler.LambdaLR(opt, base_lr_factor)
        sched = v.lr_scheduler_for_variable_batch_size(case["units_per_batch"], sizes, None,
                                                       base, lr_scaling_method=method)
        seen = []
        for _ in range(STEPS):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        lrs[method] = seen
    return {"error": False, "units": [list(map(int, m)) for _, m in mids],
            "batch_sizes": list(map(int, sizes)), "batch_max_seqlens": list(map(int, longest)),
            "lrs": lrs}


def main() -> None:
    import deepspeed
    rng = np.random.default_rng(20261207)
    table = [dict(case=c, deepspeed=deepspeed_answer(c)) for c in cases(rng, 300)]
    with open(TABLE, "w") as f:
        json.dump({"deepspeed_version": deepspeed.__version__, "steps": STEPS,
                   "base_lr": BASE_LR, "cases": table}, f, separators=(",", ":"))
    print(f"wrote {len(table)} cases to {TABLE}", file=sys.stderr)


if __name__ == "__main__":
    main()
