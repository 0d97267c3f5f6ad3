"""Turn a ``CurriculumConfig`` into the pieces the data-efficiency runtime calls.

The runtime counts iterations from 0 (the step about to run is ``iteration``, 0-based);
the curriculum counts steps from 1 (DeepSpeed's convention). ``curriculum_step`` is the
one place that converts.
"""
from __future__ import annotations

from typing import Any

import torch

from megatron.data_efficiency.config import CurriculumConfig
from megatron.data_efficiency.curriculum import transforms
from megatron.data_efficiency.curriculum.sampler import CurriculumSampler, SamplerMetric
from megatron.data_efficiency.curriculum.scheduler import CurriculumScheduler


def curriculum_step(iteration: int) -> int:
    """1-based curriculum step of the optimizer step ``iteration`` (0-based)."""
    return iteration + 1


def build_sampler(config: CurriculumConfig, global_batch_size: int, micro_batch_size: int,
                  dp_rank: int, dp_size: int, seed: int,
                  expected_fingerprint: str | None = None,
                  first_step: int = 0,
                  num_samples: int | None = None) -> CurriculumSampler | None:
    """The curriculum sampler over the config's index metrics, or None if it has none.

    Indexes are opened memory-mapped through ``analyzer.index_io.MetricIndex.open``; a
    fingerprint mismatch (index built for other data) is an error. A DeepSpeed
    ``DataAnalyzer`` index (no fingerprint) is read directly and must count
    ``num_samples`` (the training set's length) samples.
    """
    metrics = config.sampling_metrics if config.enabled else []
    if not metrics:
        return None
    built = [SamplerMetric(m.name, _open_index(m.index_path, expected_fingerprint, num_samples),
                           m.difficulty_type, CurriculumScheduler(m.schedule), m.window_low)
             for m in metrics]
    return CurriculumSampler(built, global_batch_size, micro_batch_size, dp_rank, dp_size,
                             seed=seed, first_step=first_step)


def _open_index(path, expected_fingerprint: str | None, num_samples: int | None):
    from megatron.data_efficiency.analyzer.deepspeed_index import (DeepSpeedIndexPaths,
                                                                   open_deepspeed_index)
    from megatron.data_efficiency.analyzer.index_io import MetricIndex
    if isinstance(path, DeepSpeedIndexPaths):
        return open_deepspeed_index(path, expected_num_samples=num_samples)
    return MetricIndex.open(path, expected_fingerprint)


class CurriculumTransform:
    """The batch transform of a config (seqtru / seqres / seqreo) with its pacing.

    Args:
        config: the curriculum config.
        model: ``"gpt"`` or ``"bert"``.
    """

    def __init__(self, config: CurriculumConfig, model: str = "gpt"):
        self.kind = config.transform_for(model) if config.enabled else None
        metric = config.transform_metric if config.enabled else None
        self.name = metric.name if metric is not None else None
        self.scheduler = CurriculumScheduler(metric.schedule) if metric is not None else None
        self.model = model

    def difficulty(self, iteration: int) -> int | None:
        """Sequence length the transform allows at ``iteration`` (None: no transform);
        pure in the iteration."""
        if self.scheduler is None:
            return None
        return int(self.scheduler.difficulty_at(curriculum_step(iteration)))

    def apply(self, batch: dict, difficulty: int | None,
              dp_group: Any = None) -> tuple[dict, transforms.BatchShape]:
        """Transform one collated *training* micro-batch (never evaluation data) to the
        step's ``difficulty`` (the step plan's; seqreo measures the batch instead and
        agrees its length over ``dp_group``, None: local)."""
        if self.kind == "seqtru":
            return transforms.seqtru(batch, difficulty, self.model)
        if self.kind == "seqres":
            return transforms.seqres(batch, difficulty)
        if self.kind == "seqreo":
            return transforms.seqreo(batch, dp_group)
        text = batch["text"]
        seq = text.shape[1] - 1 if self.model == "gpt" else text.shape[1]
        return dict(batch), transforms.BatchShape(text.shape[0], seq)


def sampled_values_histogram(sampler: CurriculumSampler | None,
                             iteration: int) -> dict[str, torch.Tensor]:
    """Metric values of the global batch drawn for ``iteration`` (0-based), per metric,
    for a TensorBoard histogram (empty when the sampler no longer keeps that batch)."""
    if sampler is None:
        return {}
    batch = sampler.global_batch(curriculum_step(iteration))
    if batch is None:
        return {}
    return {f"curriculum/{k}_sampled": torch.from_numpy(v.astype("float64"))
            for k, v in sampler.metric_values(batch).items()}
