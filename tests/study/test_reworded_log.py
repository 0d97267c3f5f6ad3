"""The study reads a run's metrics file, never its printed log: a run whose log and
validation lines are reworded gives the study the same results and the same progress."""
from __future__ import annotations

import builtins

from megatron import training, training_log
from megatron.study import results
from megatron.study.progress import TrainingProgress
from tests.training.helpers import run_tiny


def _reword(text: str) -> str:
    """Another wording of every printed line: other words, order and separators."""
    return " ; ".join(reversed(str(text).upper().replace("ITERATION", "STEP #").split("|")))


def _study_view(tmp_path, name: str, monkeypatch=None) -> tuple[dict, list[str]]:
    """(the study's record of a tiny run, its progress texts without the ETA)."""
    path = str(tmp_path / name / "metrics.jsonl")
    progress = TrainingProgress(path)
    run_tiny("--metrics-file", path, "--log-interval", "2", "--eval-interval", "2",
             "--hidden-dropout", "0", "--attention-dropout", "0", iters=6)
    record = {k: v for k, v in results.run_record(path).items() if k != "train_seconds"}
    for point in record["curve"]:
        point.pop("seconds")
    return record, [text.split("  ETA")[0] for text in progress.poll()]


def test_a_reworded_log_line_changes_nothing_the_study_reads(tmp_path, monkeypatch, capsys):
    plain = _study_view(tmp_path, "plain")
    printed = []

    def reworded_print(*args, **kwargs):
        printed.append(_reword(" ".join(map(str, args))))
        builtins.print(printed[-1], **kwargs)
    for module in (training_log, training):
        monkeypatch.setattr(module, "print", reworded_print, raising=False)
    reworded = _study_view(tmp_path, "reworded")
    assert any("STEP #" in line for line in printed)          # the log was reworded
    assert not any(" iteration " in line for line in printed)
    record, texts = reworded
    assert reworded == plain
    assert [p["iteration"] for p in record["curve"]] == [2, 4, 6] and record["iterations"] == 6
    assert texts[:2] == [f"step 2/6 loss {texts[0].split('loss ')[1]}",
                         f"validation (whole split) at step 2: loss {record['curve'][0]['loss']:.4f}"]
