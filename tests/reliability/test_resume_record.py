"""Resuming is refused when the checkpoint was trained with another data-efficiency
schedule, sequence length, seed or data, naming each difference and the flag that
accepts it (``--override-data-efficiency-state`` / ``--override-training-data``); with
the flag the change is logged; ``--finetune`` is not checked; an older checkpoint without
a record is resumed with a note."""
from __future__ import annotations

import os

import pytest
import torch

from megatron.errors import CheckpointError
from tests.training.helpers import run_tiny

LTD = ("--random-ltd", "--random-ltd-layer-ids", "1", "--random-ltd-min-seqlen", "8",
       "--random-ltd-total-steps", "4", "--random-ltd-seq-per-step", "4")
QUIET = ("--eval-iters", "0")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A random-LTD run saved at iteration 2."""
    ckpt = str(tmp_path_factory.mktemp("record") / "ckpt")
    run_tiny(*LTD, *QUIET, "--save", ckpt, iters=2)
    return ckpt


def _resume(saved, *flags, iters=3):
    return run_tiny(*QUIET, "--load", saved, "--no-load-rng", *flags, iters=iters)


def test_changed_seed_and_sequence_length_are_refused_then_accepted_with_the_flag(saved, capsys):
    with pytest.raises(CheckpointError) as err:
        _resume(saved, *LTD, "--seed", "8", "--seq-length", "8")
    message = str(err.value)
    assert "seed: 7 -> 8" in message and "seq_length: 16 -> 8" in message
    assert message.count("(accept with --override-training-data)") == 1
    capsys.readouterr()
    state = _resume(saved, *LTD, "--seed", "8", "--override-training-data")
    assert "--override-training-data: resuming with changes: seed: 7 -> 8" in \
        capsys.readouterr().out
    assert [it for it, _ in state.history] == [3]


def test_a_changed_or_removed_schedule_is_refused_then_accepted_with_the_flag(saved, capsys):
    changed = list(LTD)
    changed[changed.index("--random-ltd-min-seqlen") + 1] = "4"
    with pytest.raises(CheckpointError, match=r"data_efficiency.random_ltd.min_seqlen: 8 -> 4 "
                       r"\(accept with --override-data-efficiency-state\)"):
        _resume(saved, *changed)
    with pytest.raises(CheckpointError, match=r"data_efficiency.random_ltd.enabled: true -> "
                       r"false.*--override-data-efficiency-state"):
        _resume(saved)
    capsys.readouterr()
    _resume(saved, *changed, "--override-data-efficiency-state")
    assert "random_ltd.min_seqlen: 8 -> 4" in capsys.readouterr().out


def test_finetune_is_not_checked_and_an_older_checkpoint_gets_a_note(saved, tmp_path, capsys):
    assert _resume(saved, "--finetune", "--seed", "8").history[0][0] == 1
    path = os.path.join(saved, "iter_0000002", "mp_rank_00", "model_optim_rng.pt")
    state = torch.load(path, weights_only=False)
    del state["extra_state"]["run_record"]            # as written before records existed
    older = tmp_path / "older" / "iter_0000002" / "mp_rank_00"
    older.mkdir(parents=True)
    torch.save(state, older / "model_optim_rng.pt")
    (tmp_path / "older" / "latest_checkpointed_iteration.txt").write_text("2")
    capsys.readouterr()
    _resume(str(tmp_path / "older"), "--seed", "8")
    assert "has no record of its data, seed" in capsys.readouterr().out
