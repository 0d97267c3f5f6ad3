"""Everything a flag can get wrong is found by validate_args as one error listing the
problems (no ZeroDivisionError or model-building traceback later), and --train-iters 0
means "evaluate only" (as in Megatron-LM); pretrain() refuses it when evaluation is off too
(a finetuning script with --epochs 0 still scores its tasks, so that is not a flag rule)."""
from __future__ import annotations

import pytest

from megatron.arguments import ArgumentValidationError, parse_args, validate_args
from tests.training.helpers import run_tiny, tiny_gpt_flags


def _validate(*flags: str):
    return validate_args(parse_args(args=tiny_gpt_flags(*flags)))


@pytest.mark.parametrize("flags,message", [
    (("--micro-batch-size", "0"), "--micro-batch-size must be >= 1, got 0"),
    (("--global-batch-size", "0"), "--global-batch-size must be >= 1, got 0"),
    (("--seq-length", "0"), "--seq-length must be >= 1, got 0"),
    (("--num-layers", "0"), "--num-layers must be >= 1, got 0"),
    (("--num-attention-heads", "0"), "--num-attention-heads must be >= 1, got 0"),
    (("--ffn-hidden-size", "0"), "--ffn-hidden-size must be >= 1, got 0"),
    (("--kv-channels", "0"), "--kv-channels must be >= 1, got 0"),
    (("--num-workers", "-1"), "--num-workers must be >= 0, got -1"),
    (("--eval-iters", "-1"), "--eval-iters must be >= 0, got -1"),
    (("--save-interval", "-1"), "--save-interval must be >= 0, got -1"),
    (("--make-vocab-size-divisible-by", "0"), "--make-vocab-size-divisible-by must be >= 1"),
    (("--log-interval", "0"), "--log-interval must be >= 1, got 0"),
])
def test_invalid_sizes_are_one_validation_error(flags, message):
    with pytest.raises(ArgumentValidationError) as err:
        _validate(*flags, "--lr", "-1")          # a second problem is listed with it
    assert message in str(err.value) and "--lr must be > 0" in str(err.value)


def test_a_vocabulary_of_one_id_is_a_config_error():
    from megatron.errors import BadConfigError
    from megatron.initialize import NullTokenizer
    with pytest.raises(BadConfigError, match="--vocab-size must be at least 2"):
        NullTokenizer(1)


def test_train_iters_0_evaluates_only(capsys):
    state = run_tiny("--lr-warmup-iters", "0", iters=0)
    assert state.history == [] and "lm loss" in state.last_validation
    assert "nothing to train: iteration 0 already meets the stopping rule" in \
        capsys.readouterr().out


def test_a_run_that_neither_trains_nor_evaluates_is_refused():
    from megatron.errors import BadConfigError
    with pytest.raises(BadConfigError, match="--train-iters 0 trains nothing and --eval-iters 0 "
                                             "evaluates nothing"):
        run_tiny("--lr-warmup-iters", "0", "--eval-iters", "0", iters=0)
