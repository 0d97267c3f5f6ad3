"""Scoring a finetuned model on whole validation files, with Megatron's metric lines.

Every example of every file is scored exactly once: each data-parallel rank predicts a
contiguous share of the file (padded to whole micro-batches, the padding discarded), the
last pipeline stage gathers the shares over data parallelism, and the last rank prints::

    > |epoch: 0| metrics for dev-matched: correct / total = 7012 / 9815 = 71.4417 %, elapsed time (sec): 12.345
    >> |epoch: 0| overall: correct / total = 14105 / 19647 = 71.7921 %

(QQP and MRPC add ``f1 = ... %``; CoLA prints ``mcc = ...``, STS-B ``pearson = ...
spearmanr = ... corr = ...``, as Megatron does.) The same numbers are returned for the
results file.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from megatron.core import parallel_state
from megatron.core.pipeline_parallel.schedules import get_forward_backward_func
from megatron.data.data_loader import collate_samples


@dataclass(frozen=True)
class TaskMetric:
    """What a task reports: ``kind`` "accuracy" (``f1`` adds the F1 of class 1), "mcc"
    (CoLA) or "correlation" (STS-B); ``main`` names the number the best epoch is picked
    by (the one Megatron-DeepSpeed's result gathering reads)."""
    kind: str = "accuracy"
    f1: bool = False

    @property
    def main(self) -> str:
        return {"accuracy": "accuracy", "mcc": "mcc", "correlation": "spearmanr"}[self.kind]


def score(metric: TaskMetric, predictions: np.ndarray, labels: np.ndarray) -> dict:
    """The task's numbers for predictions (class ids, or values for STS-B) against labels."""
    if metric.kind == "correlation":
        from scipy.stats import pearsonr, spearmanr
        pearson = float(pearsonr(predictions, labels)[0])
        spearman = float(spearmanr(predictions, labels)[0])
        return {"total": len(labels), "pearson": pearson, "spearmanr": spearman,
                "corr": (pearson + spearman) / 2}
    if metric.kind == "mcc":
        from sklearn.metrics import matthews_corrcoef
        return {"total": len(labels), "mcc": float(matthews_corrcoef(labels, predictions))}
    correct = int((predictions == labels).sum())
    out = {"correct": correct, "total": len(labels),
           "accuracy": 100.0 * correct / max(1, len(labels))}
    if metric.f1:
        tp = int(((predictions == 1) & (labels == 1)).sum())
        fp, fn = int(((predictions == 1) & (labels != 1)).sum()), \
            int(((predictions != 1) & (labels == 1)).sum())
        out["f1"] = 100.0 * 2 * tp / max(1, 2 * tp + fp + fn)
    return out


def metric_text(metric: TaskMetric, numbers: dict) -> str:
    """The part of Megatron's line after ``metrics for NAME:`` / ``overall:``."""
    if metric.kind == "correlation":
        return (f"pearson = {numbers['pearson']} spearmanr = {numbers['spearmanr']} "
                f"corr = {numbers['corr']}")
    if metric.kind == "mcc":
        return f"mcc = {numbers['mcc']}"
    text = (f"correct / total = {numbers['correct']} / {numbers['total']} = "
            f"{numbers['accuracy']:.4f} %")
    return text + (f", f1 = {numbers['f1']:.4f} %" if "f1" in numbers else "")


def _shard(n: int) -> range:
    """This data-parallel rank's contiguous share of ``n`` examples."""
    dp, r = (parallel_state.get_data_parallel_world_size(),
             parallel_state.get_data_parallel_rank())
    return range(r * n // dp, (r + 1) * n // dp)


def predict(model: list[torch.nn.Module], dataset, forward_step: Callable, seq_length: int,
            micro_batch_size: int, rows_per_example: int = 1) -> np.ndarray | None:
    """Predictions for every example of ``dataset``, in order, on the last pipeline
    stage (None elsewhere). Collective over the model-parallel and data-parallel groups.

    Args:
        forward_step: ``fn(iterator, model) -> (output, loss_func)`` whose loss dict
            holds ``predictions`` [b].
        rows_per_example: model rows per example (the choices of a multiple-choice task).
    """
    ids = list(_shard(len(dataset)))
    count = len(ids)
    ids += ids[:1] * (-count % micro_batch_size) if ids else []
    batches = [collate_samples([dataset[i] for i in ids[s:s + micro_batch_size]])
               for s in range(0, len(ids), micro_batch_size)]
    for m in model:
        m.eval()
    try:
        dicts = get_forward_backward_func()(
            forward_step_func=forward_step, data_iterator=iter(batches), model=model,
            num_microbatches=len(batches), seq_length=seq_length,
            micro_batch_size=micro_batch_size * rows_per_example, forward_only=True) \
            if batches else []
    finally:
        for m in model:
            m.train()
    if not parallel_state.is_pipeline_last_stage():
        return None
    mine = (torch.cat([d["predictions"].cpu() for d in dicts])[:count].numpy()
            if dicts else np.zeros(0))
    if dist.is_initialized() and parallel_state.get_data_parallel_world_size() > 1:
        shares = [None] * parallel_state.get_data_parallel_world_size()
        dist.all_gather_object(shares, mine, group=parallel_state.get_data_parallel_group())
        mine = np.concatenate(shares)
    return mine


def is_last_rank() -> bool:
    return not dist.is_initialized() or dist.get_rank() == dist.get_world_size() - 1


def evaluate_files(model, datasets: list, metric: TaskMetric, epoch: int, forward_step,
                   seq_length: int, micro_batch_size: int, rows_per_example: int = 1
                   ) -> dict[str, dict] | None:
    """Score each validation dataset and all of them together; print Megatron's lines on
    the last rank. Returns ``{name: numbers, ..., "overall": numbers}`` on the last
    pipeline stage, None elsewhere."""
    results, all_preds, all_labels = {}, [], []
    for ds in datasets:
        start = time.time()
        preds = predict(model, ds, forward_step, seq_length, micro_batch_size,
                        rows_per_example)
        if preds is None:
            continue
        labels = np.asarray([ex.label for ex in ds.examples])
        results[ds.name] = score(metric, preds, labels)
        all_preds.append(preds)
        all_labels.append(labels)
        if is_last_rank():
            sep = {"accuracy": ", ", "mcc": " , ", "correlation": " "}[metric.kind]
            print(f" > |epoch: {epoch}| metrics for {ds.name}: "
                  f"{metric_text(metric, results[ds.name])}{sep}"
                  f"elapsed time (sec): {time.time() - start:.3f}", flush=True)
    if not parallel_state.is_pipeline_last_stage():
        return None
    results["overall"] = score(metric, np.concatenate(all_preds), np.concatenate(all_labels))
    if is_last_rank():
        print(f" >> |epoch: {epoch}| overall: {metric_text(metric, results['overall'])}",
              flush=True)
    return results
