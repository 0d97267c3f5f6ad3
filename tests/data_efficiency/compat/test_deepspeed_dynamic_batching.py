"""Token-budget batches and their LRs against DeepSpeed's dynamic_batching (issue 25).

The stored table (``ds_dynamic_batching.json``, written by ``ds_dynamic_batching.py`` from
DeepSpeed 0.19.8's ``batch_by_seqlens`` and ``VariableBatchSizeLR``) is checked always;
with deepspeed importable, fresh cases are checked against DeepSpeed itself. Each case:
the packing's units (sample ids), batch sizes and longest samples, or DeepSpeed's refusal
(fewer units than one step), and the LR of every step for each scaling method.
"""
import json

import numpy as np
import pytest

import ds_dynamic_batching as ref
from megatron.data_efficiency.dynamic_batching.packing import pack, scaled_lr


def ours(case: dict, steps: int, base_lr: float) -> dict:
    try:
        tb = pack(np.asarray(case["seqlens"]), case["max_tokens"], case["units_per_batch"],
                  ids=case["ids"], min_batch_size=case["min_batch_size"],
                  max_batch_size=case["max_batch_size"], order=case["order"],
                  seed=case["seed"])
    except ValueError as err:
        assert "not enough data for a single batch" in str(err)
        return {"error": True}
    sizes = tb.batch_sizes()
    lrs = {m: [scaled_lr(base_lr * ref.base_lr_factor(k), case["units_per_batch"],
                         sizes[k % len(sizes)], m) for k in range(steps)]
           for m in ref.METHODS}
    return {"error": False, "units": tb.microbatch_ids(), "batch_sizes": sizes,
            "batch_max_seqlens": [tb.batch_max_seqlen(k) for k in range(tb.num_batches)],
            "lrs": lrs}


def _compare(got: dict, expected: dict, i: int) -> None:
    assert got["error"] == expected["error"], i
    if got["error"]:
        return
    for key in ("units", "batch_sizes", "batch_max_seqlens"):
        assert got[key] == expected[key], (i, key)
    for method in ref.METHODS:
        assert got["lrs"][method] == pytest.approx(expected["lrs"][method], rel=1e-15), \
            (i, method)


def test_stored_deepspeed_table():
    with open(ref.TABLE) as f:
        table = json.load(f)
    assert table["deepspeed_version"] == "0.19.8" and len(table["cases"]) == 300
    packed = 0
    for i, row in enumerate(table["cases"]):
        _compare(ours(row["case"], table["steps"], table["base_lr"]), row["deepspeed"], i)
        packed += not row["deepspeed"]["error"]
    assert packed > 200


def test_live_deepspeed_on_fresh_cases():
    pytest.importorskip("deepspeed.runtime.data_pipeline.data_sampling.variable_batch_size_and_lr")
    for i, case in enumerate(ref.cases(np.random.default_rng(), 60)):
        _compare(ours(case, ref.STEPS, ref.BASE_LR), ref.deepspeed_answer(case), i)
