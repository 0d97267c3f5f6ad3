"""MoE flags: Megatron-LM names, Megatron-DeepSpeed aliases, one MoEConfig, clear errors."""
import pytest

from megatron.arguments import ArgumentValidationError, parse_args, validate_args
from megatron.model.moe.flags import moe_config_from_flags

BASE = ["--num-layers", "4", "--hidden-size", "32", "--num-attention-heads", "2",
        "--seq-length", "16", "--micro-batch-size", "2", "--train-iters", "2", "--lr", "1e-3",
        "--vocab-size", "64"]


def _moe(*flags):
    return moe_config_from_flags(vars(validate_args(parse_args(args=[*BASE, *flags]))))


def test_megatron_lm_and_deepspeed_names_give_the_same_config():
    lm = _moe("--num-experts", "4", "--moe-router-topk", "2", "--moe-aux-loss-coeff", "0.1",
              "--moe-expert-capacity-factor", "1.5", "--moe-layer-freq", "2")
    ds = _moe("--num-experts", "4", "4", "--topk", "2", "--moe-loss-coeff", "0.1",
              "--moe-train-capacity-factor", "1.5", "--moe-eval-capacity-factor", "1.5",
              "--moe-layer-freq", "2")
    assert lm == ds
    assert lm.topk == 2 and lm.aux_loss_coeff == 0.1 and lm.capacity_factor(False) == 1.5


def test_layer_selection_rules():
    assert _moe("--num-experts", "4").moe_layer_ids == {0, 1, 2, 3}
    assert _moe("--num-experts", "4", "--moe-layer-freq", "2").moe_layer_ids == {0, 2}
    assert _moe("--num-experts", "4", "--expert-interval", "2").moe_layer_ids == {1, 3}


def test_defaults_and_no_drop_mode():
    cfg = _moe("--num-experts", "8")
    assert (cfg.topk, cfg.aux_loss_coeff, cfg.train_capacity_factor, cfg.min_capacity,
            cfg.token_drop_policy) == (1, 0.01, 1.0, 4, "probs")
    nodrop = _moe("--num-experts", "8", "--disable-moe-token-dropping")
    assert nodrop.capacity_factor(True) is None and nodrop.capacity_factor(False) is None
    assert _moe("--num-experts", "1") is None and _moe() is None      # dense


@pytest.mark.parametrize("flags,message", [
    (["--num-experts", "4", "8"], "different expert counts"),
    (["--num-experts", "4", "--moe-router-topk", "5"], "moe-router-topk"),
    (["--num-experts", "4", "--moe-expert-capacity-factor", "1", "--moe-train-capacity-factor",
      "2"], "not both"),
    (["--num-experts", "4", "--moe-layer-freq", "2", "--expert-interval", "2"], "not both"),
    (["--num-experts", "6", "--expert-model-parallel-size", "4"], "not divisible"),
    (["--expert-model-parallel-size", "2"], "data-parallel size 1"),
])
def test_bad_flags_are_named(flags, message):
    with pytest.raises(ArgumentValidationError, match=message):
        validate_args(parse_args(args=[*BASE, *flags]))
