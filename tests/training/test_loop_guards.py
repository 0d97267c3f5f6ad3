"""The real training loop with a curriculum that shortens the first steps (seqtru 16 -> 32)
and random-LTD: the LR schedule runs on each step's consumed tokens (not the nominal
global batch x sequence length), evaluation reads full-length sequences with no token
dropping while training is truncated, and --train-tokens stops at the step that reaches
it exactly. Each of these once survived a planted bug (issue 26's mutation audit)."""
from __future__ import annotations

import re

import pytest

import pretrain_gpt
from megatron.arguments import parse_args, run_config, schedule_config_from_args, validate_args
from megatron.core.enums import ModelType
from megatron.run_plan import plan_run
from megatron.optimizer_param_scheduler import lr_at
from megatron.training import pretrain
from tests.training.helpers import synthetic_provider, tiny_gpt_flags

STEPS = 5                       # the curriculum reaches full length at step 6: all shortened
SEQ = 32
CL_LTD = ["--num-layers", "3", "--seq-length", str(SEQ), "--max-position-embeddings", str(SEQ),
          "--data-efficiency-curriculum-learning",
          "--curriculum-metric", "seqtru", "--curriculum-min-difficulty", "16",
          "--curriculum-max-difficulty", str(SEQ), "--curriculum-total-steps", "6",
          "--curriculum-difficulty-step", "8", "--random-ltd", "--random-ltd-min-seqlen", "8",
          "--random-ltd-total-steps", "6", "--random-ltd-seq-per-step", "8",
          "--eval-interval", "3", "--lr-warmup-tokens", "64", "--lr-decay-style", "linear"]
LOG = re.compile(r" iteration +(\d+)/ *\d+ \|.*? consumed tokens: +(\d+) \|.*?"
                 r"learning rate: ([\d.]+E[-+]\d+) \|")


def _flags(train_tokens: int) -> list[str]:
    flags = tiny_gpt_flags(*CL_LTD)
    for name in ("--train-iters", "--lr-warmup-iters"):
        i = flags.index(name)
        del flags[i:i + 2]
    return flags + ["--train-tokens", str(train_tokens), "--lr-decay-tokens",
                    str(train_tokens)]


def _tokens_of_first_steps(steps: int) -> list[int]:
    """Consumed tokens of the first ``steps`` steps, from the pure step planner."""
    planner = plan_run(run_config(_flags(10 ** 6))).planner
    return [planner.plan(i).consumed_tokens for i in range(steps)]


class _Tap:
    """The micro-batch feed, recording what each micro-batch holds."""

    def __init__(self, feed, training: bool, seen: list):
        self.feed, self.training, self.seen = feed, training, seen

    def __next__(self):
        batch = next(self.feed)
        self.seen.append((self.training, batch["seq_length"], batch["token_drop_plan"]))
        return batch


@pytest.fixture(scope="module")
def run(request):
    tokens = _tokens_of_first_steps(STEPS)
    seen: list = []

    def forward_step(feed, model):
        return pretrain_gpt.forward_step(_Tap(feed, model.training, seen), model)

    capture = request.getfixturevalue("capsys_module")
    state = pretrain(synthetic_provider, pretrain_gpt.model_provider,
                     ModelType.encoder_or_decoder, forward_step, argv=_flags(sum(tokens)))
    return state, tokens, seen, capture()


@pytest.fixture(scope="module")
def capsys_module():
    """stdout of the module's run (capsys is per test)."""
    import contextlib
    import io
    buffer = io.StringIO()
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(buffer))
    yield lambda: (stack.close(), buffer.getvalue())[1]
    stack.close()


def test_train_tokens_stop_at_the_exact_step_under_a_curriculum(run):
    state, tokens, _, _ = run
    assert sum(tokens) < STEPS * 4 * SEQ                   # the steps really were shorter
    assert state.iteration == STEPS and state.consumed_tokens == sum(tokens)


def test_lr_schedule_runs_on_consumed_tokens(run):
    _, tokens, _, out = run
    cfg = schedule_config_from_args(validate_args(parse_args(args=_flags(sum(tokens)))))
    logged = [(int(i), int(t), float(lr)) for i, t, lr in LOG.findall(out)]
    assert [i for i, _, _ in logged] == list(range(1, STEPS + 1))
    nominal_differs = False
    for i, consumed, lr in logged:
        assert consumed == sum(tokens[:i])
        assert lr == pytest.approx(lr_at(consumed, cfg), rel=1e-3), (i, consumed, lr)
        nominal_differs |= abs(lr_at(i * 4 * SEQ, cfg) - lr) > 0.05 * lr
    assert nominal_differs      # the nominal count would give visibly other rates


def test_evaluation_reads_full_sequences_without_dropping(run):
    _, _, seen, _ = run
    train = [(s, p) for training, s, p in seen if training]
    evals = [(s, p) for training, s, p in seen if not training]
    assert train and all(s < SEQ for s, _ in train)                 # truncated by seqtru
    assert any(p is not None for _, p in train)                     # random-LTD on
    # validation at steps 3 and 5, test at the end: x --eval-iters 2 x 2 micro-batches
    assert len(evals) == 3 * 2 * 2
    assert all(s == SEQ and p is None for s, p in evals), evals
