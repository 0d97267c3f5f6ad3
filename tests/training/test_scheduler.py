"""LR schedule: warmup in any unit with decay in any unit, and the three decay styles."""
import math

import pytest
import torch

from megatron.arguments import parse_args, schedule_config_from_args, validate_args
from megatron.optimizer_param_scheduler import (OptimizerParamScheduler, build_schedule_config,
                                                convert, lr_at)

GBS, SEQ = 8, 100            # 800 tokens per step
DECAY_TOKENS = 1_000_000
MAX_LR, MIN_LR = 1e-3, 1e-4


def _sched(warmup, style="linear", decay=(DECAY_TOKENS, "tokens")):
    cfg = build_schedule_config(MAX_LR, MIN_LR, style, warmup, decay, GBS, SEQ)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    return cfg, OptimizerParamScheduler(opt, cfg), opt


@pytest.mark.parametrize("warmup, warmup_tokens", [
    ((10, "steps"), 8000),            # 10 steps x 8 samples x 100 tokens
    ((0.01, "fraction"), 10000),      # the reference failed on exactly this with token decay
    ((50, "samples"), 5000),
    ((4000, "tokens"), 4000),
])
def test_warmup_any_unit_with_token_decay(warmup, warmup_tokens):
    cfg, sched, opt = _sched(warmup)
    assert cfg.unit == "tokens" and cfg.decay_begin == pytest.approx(warmup_tokens)
    assert opt.param_groups[0]["lr"] == 0.0
    steps = 0
    while (steps + 1) * 800 <= warmup_tokens:
        sched.step(1, GBS, 800)
        steps += 1
        expect = MAX_LR * steps * 800 / warmup_tokens
        assert opt.param_groups[0]["lr"] == pytest.approx(expect, rel=1e-12)
    assert steps >= 5   # the warmup really took several steps


@pytest.mark.parametrize("style, mid, end", [
    ("linear", (MAX_LR + MIN_LR) / 2, MIN_LR),
    ("cosine", MIN_LR + 0.5 * (MAX_LR - MIN_LR), MIN_LR),
    ("constant", MAX_LR, MAX_LR),
])
def test_decay_styles(style, mid, end):
    cfg = build_schedule_config(MAX_LR, MIN_LR, style, (0.1, "fraction"),
                                (DECAY_TOKENS, "tokens"), GBS, SEQ)
    warm = cfg.warmup
    assert lr_at(warm, cfg) == pytest.approx(MAX_LR)
    assert lr_at((warm + DECAY_TOKENS) / 2, cfg) == pytest.approx(mid)
    assert lr_at(DECAY_TOKENS, cfg) == pytest.approx(end)
    assert lr_at(DECAY_TOKENS * 3, cfg) == pytest.approx(end)
    if style == "cosine":   # a quarter into the decay: cos(pi/4)
        q = warm + (DECAY_TOKENS - warm) / 4
        expect = MIN_LR + 0.5 * (math.cos(math.pi / 4) + 1) * (MAX_LR - MIN_LR)
        assert lr_at(q, cfg) == pytest.approx(expect)


def test_steps_and_samples_units():
    cfg = build_schedule_config(1.0, 0.0, "linear", (800 * 4, "tokens"), (100, "steps"), GBS, SEQ)
    assert cfg.unit == "steps" and cfg.warmup_progress_unit == "tokens"
    assert cfg.decay_begin == pytest.approx(4)
    assert convert(3, "steps", "samples", GBS, SEQ) == 24
    assert convert(2400, "tokens", "steps", GBS, SEQ) == 3
    cfg = build_schedule_config(1.0, 0.0, "linear", (2, "steps"), (160, "samples"), GBS, SEQ)
    assert cfg.warmup == 2 and cfg.decay_begin == 16
    assert lr_at(8, cfg, warmup_progress=1) == pytest.approx(0.5)


class _FakeOptimizer:
    def __init__(self):
        self.param_groups = [{"lr": 0.0}]


def test_warmup_in_steps_ends_at_its_step_when_steps_consume_fewer_tokens():
    """Curriculum / random-LTD steps consume fewer tokens than nominal: a warmup given
    in steps still ends at that step, and the token-driven decay never jumps back up."""
    decay_tokens = 100 * GBS * SEQ
    cfg = build_schedule_config(1.0, 0.1, "linear", (10, "steps"), (decay_tokens, "tokens"),
                                GBS, SEQ)
    sched = OptimizerParamScheduler(_FakeOptimizer(), cfg)
    lrs = []
    for step in range(1, 200):
        tokens = GBS * SEQ * min(1.0, 0.1 + step / 100)       # short steps early on
        lrs.append(sched.step(1, GBS, int(tokens)))
    assert lrs[4] == pytest.approx(0.5)                       # step 5 of a 10-step warmup
    assert lrs[9] == pytest.approx(1.0)                       # warmup over at step 10
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))    # then never increases
    assert lrs[-1] == pytest.approx(0.1)                      # decay ends at the token budget


def test_warmup_longer_than_decay_is_an_error():
    with pytest.raises(ValueError, match="warmup"):
        build_schedule_config(1.0, 0.0, "linear", (2000, "steps"), (100_000, "tokens"), GBS, SEQ)


def test_state_dict_round_trip():
    _, sched, opt = _sched((10, "steps"), "cosine")
    for _ in range(37):
        sched.step(1, GBS, 800)
    state = sched.state_dict()
    _, fresh, opt2 = _sched((10, "steps"), "cosine")
    fresh.load_state_dict(state)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    sched.step(1, GBS, 800)
    fresh.step(1, GBS, 800)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_changed_schedule_on_load_is_the_flags(capsys):
    _, sched, _ = _sched((10, "steps"), "cosine")
    for _ in range(5):
        sched.step(1, GBS, 800)
    state = sched.state_dict()
    _, linear, _ = _sched((10, "steps"), "linear")
    linear.load_state_dict(state)
    assert "WARNING" in capsys.readouterr().out and linear.config.decay_style == "linear"
    cfg = build_schedule_config(MAX_LR, MIN_LR, "linear", (10, "steps"),
                                (DECAY_TOKENS, "tokens"), GBS, SEQ)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    overriding = OptimizerParamScheduler(opt, cfg, override_on_load=True)
    overriding.load_state_dict(state)
    assert "--override-opt_param-scheduler: the LR schedule comes from the flags" in \
        capsys.readouterr().out
    assert (overriding.num_steps, overriding.num_tokens) == (5, 4000)   # counters restored
    assert overriding.config.decay_style == "linear"                     # schedule: the flags'
    assert opt.param_groups[0]["lr"] == pytest.approx(lr_at(4000, cfg, 5))


def test_weight_decay_multiplier():
    p1, p2 = torch.nn.Parameter(torch.zeros(2, 2)), torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([{"params": [p1], "wd_mult": 1.0}, {"params": [p2], "wd_mult": 0.0}])
    cfg = build_schedule_config(1e-3, 0, "constant", (0, "steps"), (10, "steps"), 1, 1,
                                weight_decay=0.1)
    OptimizerParamScheduler(opt, cfg)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


def test_flags_token_decay_with_warmup_fraction():
    args = parse_args(args=["--num-layers", "2", "--hidden-size", "8", "--num-attention-heads", "2",
                            "--seq-length", str(SEQ), "--micro-batch-size", str(GBS), "--lr", "1e-3",
                            "--train-tokens", str(DECAY_TOKENS), "--lr-warmup-fraction", "0.05",
                            "--lr-decay-style", "cosine", "--vocab-size", "64"])
    validate_args(args)
    cfg = schedule_config_from_args(args)
    assert cfg.unit == "tokens" and cfg.decay == DECAY_TOKENS
    assert cfg.warmup == pytest.approx(0.05 * DECAY_TOKENS)
