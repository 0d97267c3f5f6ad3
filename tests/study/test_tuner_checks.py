"""tools/tune_data_efficiency.py refuses trials too short to separate the settings (naming
the --fraction that works), withholds the flags when every trial gave the same
perplexities, counts its trials against the search's bound, and --force goes on."""
from __future__ import annotations

import json
import os

import pytest

from megatron.study.presets import get_preset
from megatron.study.trials import fraction_needed, trial_evaluations, trial_steps
from tests.tools.tool_loader import load_tool

OWN_DATA = ["--data-path", "unused_text_document", "--tokenizer-type", "NullTokenizer"]


@pytest.fixture()
def tuner():
    return load_tool("tune_data_efficiency")


def _fake_runner(curve):
    def trial_runner(preset, tech, data, out_dir, extra, threads, progress):
        def run(start, duration):
            progress.finished(f"trial_{start:g}_{duration:g}",
                              {"val_loss": 1.0, "consumed_tokens": 1, "train_seconds": 0.1},
                              skipped=False)
            return curve(start, duration)
        return run
    return trial_runner


def test_too_short_trials_are_refused_with_the_fraction_that_works(tuner, tmp_path, capsys):
    smoke = get_preset("smoke")
    assert trial_evaluations(trial_steps(smoke, 0.02)) == 1          # the default: 1 step
    need = fraction_needed(smoke)
    assert trial_evaluations(trial_steps(smoke, need)) >= 4
    assert trial_evaluations(trial_steps(smoke, round(need - 0.01, 2))) < 4
    out = str(tmp_path / "t")
    assert tuner.main(["--technique", "ltd", "--preset", "smoke", "--out", out]) == 2
    err = capsys.readouterr().err
    assert f"use --fraction {need:g} or more" in err and "1 step(s) with 1 evaluation(s)" in err
    assert not os.path.exists(out)                                   # nothing ran


@pytest.mark.parametrize("force", [False, True])
def test_equal_trials_give_no_flags_unless_forced(tuner, tmp_path, capsys, monkeypatch, force):
    monkeypatch.setattr(tuner, "trial_runner", _fake_runner(lambda s, d: [90.0, 80.0, 70.0, 60.0]))
    out = str(tmp_path / "t")
    argv = ["--technique", "ltd", "--preset", "smoke", "--out", out, "--fraction", "0.5",
            *OWN_DATA] + (["--force"] if force else [])
    assert tuner.main(argv) == (0 if force else tuner.NO_SIGNAL)
    captured = capsys.readouterr()
    result = json.load(open(os.path.join(out, "tuning.json")))
    assert "same validation perplexities" in result["warning"]
    assert "same validation perplexities" in captured.err and "--fraction" in captured.err
    assert ("--random-ltd-min-seqlen" in captured.out) == force == ("flags" in result)


def test_separated_trials_print_the_flags_and_count_against_the_bound(tuner, tmp_path, capsys,
                                                                      monkeypatch):
    # unstable below a start of 20 tokens or above a duration of 0.8
    curve = lambda s, d: [90.0, 80.0, 200.0 if s < 20 or d > 0.8 else 70.0, 60.0]  # noqa: E731
    monkeypatch.setattr(tuner, "trial_runner", _fake_runner(curve))
    out = str(tmp_path / "t")
    assert tuner.main(["--technique", "ltd", "--preset", "smoke", "--out", out, "--fraction",
                       "0.5", "--starts", "8,12,16,20,24,28,32", *OWN_DATA]) == 0
    stdout = capsys.readouterr().out
    result = json.load(open(os.path.join(out, "tuning.json")))
    assert (result["r_s"], result["T_r"]) == (20, 0.8) and "warning" not in result
    assert "--random-ltd-min-seqlen 20" in stdout
    n = len(result["trials"])
    bound = int(stdout.split("at most ")[1].split()[0])
    assert f"[trial {n} of at most {bound}]" in stdout and n <= bound
