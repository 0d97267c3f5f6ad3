"""pretrain() end to end on a tiny GPT: log lines, TensorBoard, stopping rules, NaN handling."""
import re

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import pretrain_gpt
from megatron.core.enums import ModelType
from megatron.training import TrainingDivergedError, pretrain
from tests.training.helpers import run_tiny, synthetic_provider, tiny_gpt_flags

LOG_LINE = re.compile(
    r"^ iteration +(\d+)/ +(\d+) \| consumed samples: +\d+ \| consumed tokens: +(\d+) \| "
    r"elapsed time per iteration \(ms\): [\d.]+ \| "
    r"throughput per GPU \(TFLOP/s/GPU\): [\d.]+ \| learning rate: [\d.]+E[-+]\d+ \| "
    r"global batch size: +\d+ \| lm loss: [\d.]+E[-+]\d+ \| loss scale: [\d.]+ \| "
    r"grad norm: [\d.]+ \| number of skipped iterations: +(\d+) \| "
    r"number of nan iterations: +(\d+) \| tokens per second: [\d.]+ \|$", re.M)


def test_log_lines_and_tensorboard(tmp_path, capsys):
    tb = str(tmp_path / "tb")
    built = []

    def provider(pre_process=True, post_process=True):
        built.append(pretrain_gpt.model_provider(pre_process, post_process))
        return built[-1]

    state = run_tiny("--tensorboard-dir", tb, "--log-batch-size-to-tensorboard",
                     "--log-timers-to-tensorboard", "--log-validation-ppl-to-tensorboard",
                     "--log-optimizer-states-to-tensorboard", iters=6, model_provider=provider)
    out = capsys.readouterr().out
    lines = LOG_LINE.findall(out)
    assert [int(m[0]) for m in lines] == [1, 2, 3, 4, 5, 6]
    assert [int(m[2]) for m in lines] == [64 * i for i in range(1, 7)]
    assert "validation loss at iteration 3 | lm loss value: " in out
    assert "lm loss PPL: " in out
    assert " test loss at iteration 6 | lm loss value: " in out
    acc = EventAccumulator(tb)
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("lm loss", "lm loss vs tokens", "lm loss validation", "lm loss validation vs tokens",
                "learning-rate", "learning-rate vs tokens", "grad-norm", "loss-scale",
                "batch-size", "batch-size vs tokens", "iteration-time", "tokens-per-second",
                "consumed-tokens", "steps-vs-tokens", "lm loss validation ppl",
                "lm loss validation ppl vs tokens",
                *(f"optimizer/{n}_{k} vs tokens" for n in ("variance", "variance_sqrt",
                                                          "momentum", "weight")
                  for k in ("l2", "l1", "abs_max"))):
        assert tag in tags, tag
    weight = acc.Scalars("optimizer/weight_l2")[-1].value    # after the last step
    assert weight == pytest.approx(_weight_norm(built[0]), rel=1e-5)
    assert acc.Scalars("optimizer/variance_l2")[-1].value > 0
    loss_vs_tokens = acc.Scalars("lm loss vs tokens")
    assert [e.step for e in loss_vs_tokens] == [64 * i for i in range(1, 7)]
    assert [e.value for e in loss_vs_tokens] == pytest.approx([l for _, l in state.history])
    assert [(e.step, e.value) for e in acc.Scalars("steps-vs-tokens")][-1] == (384, 6.0)
    assert [e.step for e in acc.Scalars("lm loss validation")] == [3, 6]


def _weight_norm(model) -> float:
    return sum(float((p.detach().double() ** 2).sum()) for p in model.parameters()) ** 0.5


def test_tensorboard_flags_gate_their_scalars(tmp_path):
    """Megatron(-DeepSpeed) writes these only under --log-*-to-tensorboard."""
    tb = str(tmp_path / "tb")
    run_tiny("--tensorboard-dir", tb, iters=3)
    acc = EventAccumulator(tb)
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert "lm loss validation" in tags and "learning-rate" in tags
    for tag in ("batch-size", "iteration-time", "lm loss validation ppl",
                "optimizer/weight_l2 vs tokens"):
        assert tag not in tags, tag


def test_loss_is_the_mean_over_the_tokens_the_mask_keeps():
    import torch
    per_token = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0]])
    loss, reported = pretrain_gpt.loss_func(mask, per_token)
    assert loss.item() == pytest.approx((1 + 2 + 6 + 7) / 4) == reported["lm loss"].item()
    assert pretrain_gpt.loss_func(torch.zeros(2, 4), per_token)[0].item() == 0.0


def test_train_tokens_stopping_rule_at_the_exact_boundary():
    """--train-tokens equal to 3 steps' tokens stops after exactly 3 steps (the step that
    reaches the budget is the last), and the run plan says so before training."""
    from megatron.run_plan import RunPlan
    from megatron.training import TrainState, _training_done
    flags = tiny_gpt_flags("--eval-iters", "0")
    i = flags.index("--train-iters")
    flags[i:i + 2] = ["--train-tokens", str(3 * 64)]               # 64 tokens per step
    state = pretrain(synthetic_provider, pretrain_gpt.model_provider,
                     ModelType.encoder_or_decoder, pretrain_gpt.forward_step,
                     argv=flags)
    assert state.iteration == 3 and state.consumed_tokens == 192
    run = RunPlan(train_iters=3, train_valid_test_num_samples=(12, 0, 0),
                  nominal_train_iters=3, stop_tokens=192)
    assert [_training_done(TrainState(consumed_tokens=t), run)
            for t in (191, 192, 193)] == [False, True, True]


def _poisoned_forward(at_call: int):
    calls = {"n": 0}

    def forward_step(data_iterator, model):
        output, loss_func = pretrain_gpt.forward_step(data_iterator, model)
        calls["n"] += 1
        if calls["n"] == at_call:
            output = output * float("nan")
        return output, loss_func
    return forward_step


def test_nan_loss_stops_fp32_naming_the_iteration():
    # 2 micro-batches per step: call 5 is the first micro-batch of iteration 3.
    with pytest.raises(TrainingDivergedError, match="iteration 3"):
        run_tiny("--eval-iters", "0", forward_step=_poisoned_forward(5))


def test_nan_loss_under_fp16_skips_the_step(capsys):
    state = run_tiny("--eval-iters", "0", "--fp16", "--initial-loss-scale", "1024",
                     forward_step=_poisoned_forward(5))
    out = capsys.readouterr().out
    assert state.iteration == 6
    assert " > iteration 3: skipped" in out
    lines = {int(m[0]): m for m in LOG_LINE.findall(out)}
    assert set(lines) == {1, 2, 4, 5, 6}      # no loss to print on the skipped step
    assert "number of skipped iterations:   1 | number of nan iterations:   1" in out
    assert lines[4][3] == "0"                  # counters restart each log interval


def test_cyclic_dataloader_trains_and_resumes_exactly(tmp_path):
    """--dataloader-type cyclic (Megatron's per-epoch reshuffle) drives the training order."""
    straight = run_tiny("--dataloader-type", "cyclic", "--eval-iters", "0", iters=4)
    single = run_tiny("--eval-iters", "0", iters=4)
    assert straight.history != single.history                 # another sample order
    ckpt = str(tmp_path / "ckpt")
    run_tiny("--dataloader-type", "cyclic", "--eval-iters", "0", "--save", ckpt,
             "--exit-interval", "2", iters=4)
    resumed = run_tiny("--dataloader-type", "cyclic", "--eval-iters", "0", "--load", ckpt,
                       iters=4)
    assert resumed.history == straight.history[2:]
