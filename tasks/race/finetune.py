"""RACE as a ``TaskSpec``: four rows per question, one score each, accuracy."""
from __future__ import annotations

import os

from tasks.eval_utils import TaskMetric
from tasks.finetune_utils import TaskSpec
from tasks.race.data import NUM_CHOICES, MultipleChoiceDataset, read_race


def folder_name(path: str) -> str:
    """``.../RACE/dev/middle`` -> ``dev-middle`` (Megatron's name for the folder)."""
    parts = os.path.normpath(path).split(os.sep)
    return "-".join(parts[-2:])


def race_specs() -> dict[str, TaskSpec]:
    return {"RACE": TaskSpec(num_classes=1, metric=TaskMetric(), read=read_race,
                             dataset=MultipleChoiceDataset, name_of=folder_name,
                             num_choices=NUM_CHOICES)}
