"""MSLG schedule, token-drop plans, and config parsing of random-LTD."""
import argparse

import pytest
import torch

from megatron.data_efficiency.random_ltd.config import RandomLTDConfig
from megatron.data_efficiency.random_ltd.flags import add_random_ltd_args, config_from_args
from megatron.data_efficiency.random_ltd.plan import TokenDropPlan
from megatron.data_efficiency.random_ltd.scheduler import RandomLTDScheduler, mslg_kept_length


def _scheduler(num_layers=24, seq=2048, **kw):
    cfg = RandomLTDConfig(enabled=True, min_seqlen=kw.pop("min_seqlen", 128), max_seqlen=seq,
                          total_steps=kw.pop("total_steps", 200000), **kw)
    return RandomLTDScheduler(cfg, num_layers, seq, seed=1234)


def test_reference_values():
    s = _scheduler()
    got = {t: s.kept_length(t) for t in (0, 50000, 100000, 199999, 200000, 10 ** 6)}
    assert got == {0: 128, 50000: 608, 100000: 1088, 199999: 2032, 200000: 2048, 10 ** 6: 2048}


def test_rounding_and_minimum():
    assert mslg_kept_length(0, 8, 64, 100, 16) == 16  # DeepSpeed's 0 kept tokens: raised (ours)
    assert mslg_kept_length(0, 10, 64, 100, 8) == 8   # as DeepSpeed: rounded down, not raised
    assert mslg_kept_length(0, 100, 2048, 100, 16) == 96
    assert mslg_kept_length(1, 128, 2048, 200000, 16) == 128
    assert all(mslg_kept_length(t, 100, 1000, 77, 16) % 16 == 0 for t in range(0, 77))
    assert mslg_kept_length(76, 100, 1000, 77, 16) <= 1000


def test_max_not_a_multiple_of_seq_per_step_is_reached():
    # S_max 2050, step 16: DeepSpeed's unclamped t/T reaches 2050 shortly after T_r, where
    # clamping at T_r would stay at 2048 and drop 2 tokens in every layer for ever.
    got = [mslg_kept_length(t, 128, 2050, 1000, 16) for t in (999, 1000, 1007, 1008, 10 ** 6)]
    assert got == [2048, 2048, 2048, 2050, 2050]


def test_cap_by_curriculum_length_and_off():
    s = _scheduler()
    assert s.kept_length(100000, seq_length=512) == 512 and s.kept_length(50000) == 608
    assert s.layer_ids == frozenset(range(1, 23))
    off = RandomLTDScheduler(RandomLTDConfig(enabled=False), 24, 2048, 1)
    assert not off.enabled and off.kept_length(0) is None


def test_layer_choice():
    assert RandomLTDConfig(enabled=True, total_steps=1, layer_num=4).resolve_layer_ids(12) == \
        (4, 5, 6, 7)
    assert RandomLTDConfig(enabled=True, total_steps=1, layer_num=22).resolve_layer_ids(24) == \
        tuple(range(1, 23))
    assert RandomLTDConfig(enabled=True, total_steps=1,
                           layer_ids=(5, 2)).resolve_layer_ids(8) == (2, 5)
    with pytest.raises(ValueError, match="--random-ltd-layer-ids"):
        RandomLTDConfig(enabled=True, total_steps=1, layer_ids=(9,)).resolve_layer_ids(8)
    with pytest.raises(ValueError, match="contradicts"):
        RandomLTDConfig(enabled=True, total_steps=1, layer_ids=(1, 2), layer_num=3)


def test_draw_at_once_equals_the_per_layer_draws_and_moves_once():
    """All dropping layers of a micro-batch drawn into one tensor give exactly the draws of
    each layer alone, so the plan is device-independent; moving it is one copy."""
    plan = TokenDropPlan.draw(frozenset({3, 1}), 6, 7, 3, 1, 0, batch_size=4, seq_length=16)
    assert plan.indices.shape == (2, 4, 6)
    lazy = _plan(microbatch=1)
    for layer in (1, 3):
        assert torch.equal(plan.kept_indices(layer, 4, 16, "cpu"),
                           lazy.kept_indices(layer, 4, 16, "cpu"))
    meta = TokenDropPlan.draw(frozenset({1, 3}), 6, 7, 3, 1, 0, 4, 16, device="meta")
    assert meta.indices.device.type == "meta" and meta.kept_indices(1, 4, 16, "meta").shape == (4, 6)
    with pytest.raises(ValueError, match="draw the plan for the model's device"):
        meta.kept_indices(1, 4, 16, "cpu")


def _plan(**kw):
    base = dict(layer_ids=frozenset({1, 2}), kept_length=6, seed=7, iteration=3, microbatch=0,
                dp_rank=0)
    base.update(kw)
    return TokenDropPlan(**base)


def test_plan_draws_sorted_distinct_reproducible():
    idx = _plan().kept_indices(1, 4, 16, "cpu")
    assert idx.shape == (4, 6) and idx.dtype == torch.long
    for row in idx:
        assert torch.all(row[1:] > row[:-1]) and row.min() >= 0 and row.max() < 16
    assert torch.equal(idx, _plan().kept_indices(1, 4, 16, "cpu"))
    assert not torch.equal(idx[0], idx[1])  # samples draw independently


@pytest.mark.parametrize("change", [dict(iteration=4), dict(microbatch=1), dict(dp_rank=1),
                                    dict(seed=8)])
def test_plan_draws_differ_per_key(change):
    a = _plan().kept_indices(1, 4, 64, "cpu")
    assert not torch.equal(a, _plan(**change).kept_indices(1, 4, 64, "cpu"))
    assert not torch.equal(a, _plan().kept_indices(2, 4, 64, "cpu"))


def test_plan_leaves_global_rng_alone():
    torch.manual_seed(5)
    before = torch.get_rng_state()
    _plan().kept_indices(1, 8, 32, "cpu")
    assert torch.equal(before, torch.get_rng_state())


def test_plan_draws_are_uniform():
    counts = torch.zeros(8)
    pairs = torch.zeros(8, 8)
    n = 800
    for it in range(n):
        idx = _plan(iteration=it, kept_length=2).kept_indices(1, 1, 8, "cpu")[0]
        counts[idx] += 1
        pairs[idx[0], idx[1]] += 1
    # Each position is kept with probability 2/8: expect 200 +- ~3 sigma (sigma ~12).
    assert torch.all((counts - 200).abs() < 45), counts
    # Each of the 28 pairs has probability 1/28: expect ~28.6 each.
    upper = pairs[torch.triu(torch.ones(8, 8, dtype=torch.bool), 1)]
    assert torch.all(upper > 8) and torch.all(upper < 55), upper


def _parse(argv):
    return add_random_ltd_args(argparse.ArgumentParser()).parse_args(argv)


def test_config_from_args():
    cfg = config_from_args(_parse(["--random-ltd", "--random-ltd-total-steps", "70",
                                   "--random-ltd-min-seqlen", "32"]), 6, 256)
    assert cfg.enabled and cfg.min_seqlen == 32 and cfg.max_seqlen == 256
    assert cfg.resolve_layer_ids(6) == (1, 2, 3, 4) and cfg.seq_per_step == 16
    assert not config_from_args(_parse([]), 6, 256).enabled
    with pytest.raises(ValueError, match="--random-ltd-min-seqlen.*without --random-ltd"):
        config_from_args(_parse(["--random-ltd-min-seqlen", "8"]), 6, 256)
    with pytest.raises(ValueError, match="--random-ltd-total-steps"):
        config_from_args(_parse(["--random-ltd"]), 6, 256)
    with pytest.raises(ValueError, match="--random-ltd-layer-num"):
        config_from_args(_parse(["--random-ltd", "--random-ltd-total-steps", "5",
                                 "--random-ltd-layer-num", "2",
                                 "--random-ltd-layer-ids", "1"]), 6, 256)


DS = {"data_routing": {"enabled": True, "random_ltd": {
    "enabled": True, "total_layer_num": 24, "random_ltd_layer_num": 22,
    "random_ltd_layer_id": list(range(1, 23)), "model_mask_name": "attention_mask",
    "model_type": "decoder", "hidden_state_order": "seq_batch_dim",
    "random_ltd_schedule": {"min_value": 128, "max_value": 2048, "schedule_type": "fixed_linear",
                            "schedule_config": {"require_steps": 200000, "seq_per_step": 16}}}}}


def test_from_deepspeed_dict():
    cfg = RandomLTDConfig.from_deepspeed_dict(DS)
    assert (cfg.min_seqlen, cfg.max_seqlen, cfg.total_steps, cfg.seq_per_step) == \
        (128, 2048, 200000, 16)
    assert cfg.resolve_layer_ids(24) == tuple(range(1, 23))
    bad = {"enabled": True, "random_ltd_schedule": {"min_valu": 3}}
    with pytest.raises(ValueError, match="min_valu"):
        RandomLTDConfig.from_deepspeed_dict(bad)
