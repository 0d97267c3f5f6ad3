"""The GLUE tasks as ``TaskSpec``s: their TSV layouts (``tasks/glue/data.py``) and metrics
(accuracy; + F1 for QQP and MRPC; Matthews correlation for CoLA; Pearson / Spearman for
the STS-B regression), as Megatron and the GLUE benchmark report them."""
from __future__ import annotations

import os

from megatron.training import print_rank_0
from tasks.data_utils import ClassificationDataset
from tasks.eval_utils import TaskMetric
from tasks.finetune_utils import TaskSpec
from tasks.glue.data import TASKS, read_glue_tsv

_METRICS = {"QQP": TaskMetric(f1=True), "MRPC": TaskMetric(f1=True),
            "CoLA": TaskMetric("mcc"), "STS-B": TaskMetric("correlation")}


def file_name(path: str) -> str:
    """A validation file's name in the metric lines: ``.../MNLI/dev_matched.tsv`` ->
    ``dev-matched`` (Megatron's names, which its result-gathering script reads)."""
    return os.path.splitext(os.path.basename(path))[0].replace("_", "-")


def _reader(task: str):
    def read(path: str) -> list:
        examples, skipped = read_glue_tsv(task, path)
        if skipped:
            print_rank_0(f" > {path}: skipped {skipped} rows with an empty text")
        return examples
    return read


def glue_specs() -> dict[str, TaskSpec]:
    """``--task`` name -> its spec, for every GLUE task of ``TASKS``."""
    return {task: TaskSpec(num_classes=layout.num_classes,
                           metric=_METRICS.get(task, TaskMetric()), read=_reader(task),
                           dataset=ClassificationDataset, name_of=file_name)
            for task, layout in TASKS.items()}
