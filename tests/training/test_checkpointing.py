"""Checkpoints: Megatron's layout, atomic publication, exact resume."""
import os

import pytest
import torch

from megatron.checkpointing import save_load
from megatron.checkpointing import TRACKER, load_checkpoint, read_tracker, save_checkpoint
from megatron.errors import CheckpointError
from megatron.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.optimizer_param_scheduler import OptimizerParamScheduler, build_schedule_config
from tests.training.helpers import run_tiny


def _parts(seed):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    opt = get_megatron_optimizer([model], OptimizerConfig(lr=0.1))
    sched = OptimizerParamScheduler(opt, build_schedule_config(0.1, 0.0, "linear", (1, "steps"),
                                                               (10, "steps"), 1, 1))
    return model, opt, sched


def _train_one(model, opt, sched):
    opt.zero_grad()
    model(torch.randn(2, 3)).sum().backward()
    opt.step()
    sched.step(1, 1, 1)


def test_layout_and_round_trip(tmp_path):
    model, opt, sched = _parts(0)
    _train_one(model, opt, sched)
    save_checkpoint(5, [model], opt, sched, {"consumed_samples": 40}, save_dir=str(tmp_path))
    assert (tmp_path / TRACKER).read_text() == "5"
    assert (tmp_path / "iter_0000005" / "mp_rank_00" / "model_optim_rng.pt").is_file()
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))
    expected_rand = torch.rand(3)
    model2, opt2, sched2 = _parts(1)
    iteration, extra = load_checkpoint([model2], opt2, sched2, load_dir=str(tmp_path))
    assert iteration == 5 and extra == {"consumed_samples": 40}
    assert torch.equal(torch.rand(3), expected_rand)          # RNG restored
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    assert sched2.num_steps == 1 and opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert opt2.state_dict()["optimizer"]["state"].keys() == opt.state_dict()["optimizer"]["state"].keys()


def test_crash_before_rename_keeps_old_checkpoint(tmp_path, monkeypatch):
    model, opt, sched = _parts(0)
    save_checkpoint(2, [model], opt, sched, {"step": 2}, save_dir=str(tmp_path))
    _train_one(model, opt, sched)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed before publishing")

    monkeypatch.setattr(save_load, "publish", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(4, [model], opt, sched, {"step": 4}, save_dir=str(tmp_path))
    monkeypatch.undo()
    assert read_tracker(str(tmp_path)) == 2
    assert not (tmp_path / "iter_0000004").exists()
    model2, opt2, sched2 = _parts(1)
    iteration, extra = load_checkpoint([model2], opt2, sched2, load_dir=str(tmp_path))
    assert iteration == 2 and extra == {"step": 2}
    # The next save cleans the leftover temporary folder and publishes normally.
    save_checkpoint(4, [model], opt, sched, {"step": 4}, save_dir=str(tmp_path))
    assert read_tracker(str(tmp_path)) == 4
    assert sorted(os.listdir(tmp_path)) == ["iter_0000002", "iter_0000004", TRACKER]


def test_missing_checkpoint_file_is_a_clear_error(tmp_path):
    (tmp_path / TRACKER).write_text("7")
    model, opt, sched = _parts(0)
    with pytest.raises(CheckpointError, match="iteration 7: .*model_optim_rng.pt: file not found"):
        load_checkpoint([model], opt, sched, load_dir=str(tmp_path))
    (tmp_path / TRACKER).write_text("seven")
    with pytest.raises(CheckpointError, match=TRACKER):
        load_checkpoint([model], opt, sched, load_dir=str(tmp_path))


@pytest.mark.parametrize("precision", [[], ["--bf16"], ["--fp16", "--initial-loss-scale", "64"]])
def test_exact_resume_through_pretrain(tmp_path, precision):
    """6 steps straight == 3 steps, save, a new pretrain() with --load, 3 more steps
    (dropout on: the RNG states must be restored too)."""
    straight = run_tiny("--hidden-dropout", "0.1", *precision, iters=6)
    ckpt = str(tmp_path / "ckpt")
    first = run_tiny("--save", ckpt, "--exit-interval", "3", *precision, iters=6)
    assert first.iteration == 3 and read_tracker(ckpt) == 3
    resumed = run_tiny("--load", ckpt, "--save", ckpt, *precision, iters=6)
    assert [it for it, _ in resumed.history] == [4, 5, 6]
    assert first.history + resumed.history == straight.history     # bit-identical losses
    assert resumed.last_validation == straight.last_validation
    assert resumed.consumed_samples == straight.consumed_samples == 24
    assert read_tracker(ckpt) == 6


def test_load_rejects_a_different_model(tmp_path):
    ckpt = str(tmp_path / "ckpt")
    run_tiny("--save", ckpt, "--eval-iters", "0", "--exit-interval", "1", iters=3)
    with pytest.raises(ValueError, match="--hidden-size: checkpoint 32, now 16"):
        run_tiny("--load", ckpt, "--hidden-size", "16", "--eval-iters", "0", iters=3)


def test_load_names_a_different_norm_or_bias_choice(tmp_path):
    """The Llama-family choices that change the tensors are named as one line, not a
    strict-load shape error (a fine-tune from RMSNorm / bias-free weights with the wrong
    flags)."""
    ckpt = str(tmp_path / "ckpt")
    run_tiny("--save", ckpt, "--eval-iters", "0", "--exit-interval", "1",
             "--normalization", "RMSNorm", "--disable-bias-linear", iters=3)
    with pytest.raises(CheckpointError, match="--normalization: checkpoint 'RMSNorm', now "
                                              "'LayerNorm'; --disable-bias-linear"):
        run_tiny("--load", ckpt, "--eval-iters", "0", iters=3)
