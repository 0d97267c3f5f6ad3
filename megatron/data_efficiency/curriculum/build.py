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
                  expected_fingerprint: str | None = None) -> CurriculumSampler | None:
    """The curriculum sampler over the config's index metrics, or None if it has none.

    Indexes are opened memory-mapped through ``analyzer.index_io.MetricIndex.open``; a
    fingerprint mismatch (index built for other data) is an error.
    """
    metrics = config.sampling_metrics if config.enabled else []
    if not metrics:
        return None
    from megatron.data_efficiency.analyzer.index_io import MetricIndex
    built = [SamplerMetric(m.name, MetricIndex.open(m.index_path, expected_fingerprint),
                           m.difficulty_type, CurriculumScheduler(m.schedule))
             for m in metrics]
    return CurriculumSampler(built, global_batch_size, micro_batch_size, dp_rank, dp_size,
                             seed=seed)


class CurriculumTransform:
    """The batch transform of a config (seqtru / seqres / seqreo) with its pacing.

    Args:
        config: the curriculum config.
        model: ``"gpt"`` or ``"bert"``.
        dp_group: data-parallel group for ``seqreo``'s length agreement (None: local).
    """

    def __init__(self, config: CurriculumConfig, model: str = "gpt", dp_group: Any = None):
        self.kind = config.transform_for(model) if config.enabled else None
        metric = config.transform_metric if config.enabled else None
        self.name = metric.name if metric is not None else None
        self.scheduler = CurriculumScheduler(metric.schedule) if metric is not None else None
        self.model = model
        self.dp_group = dp_group

    def difficulty(self, iteration: int) -> int | None:
        """Sequence length the transform allows at ``iteration`` (None: no transform)."""
        if self.scheduler is None:
            return None
        step = curriculum_step(iteration)
        if step >= self.scheduler.step:          # moving forward: keep DeepSpeed's latch state
            return int(self.scheduler.update_difficulty(step))
        return int(self.scheduler.difficulty_at(step))

    def apply(self, batch: dict, iteration: int) -> tuple[dict, transforms.BatchShape]:
        """Transform one collated *training* micro-batch (never evaluation data)."""
        if self.kind == "seqtru":
            return transforms.seqtru(batch, self.difficulty(iteration), self.model)
        if self.kind == "seqres":
            return transforms.seqres(batch, self.difficulty(iteration))
        if self.kind == "seqreo":
            return transforms.seqreo(batch, self.dp_group)
        text = batch["text"]
        seq = text.shape[1] - 1 if self.model == "gpt" else text.shape[1]
        return dict(batch), transforms.BatchShape(text.shape[0], seq)

    def shape_for_step(self, iteration: int, global_batch_size: int,
                       seq_length: int) -> transforms.BatchShape:
        """Rows and length of the global batch at ``iteration`` from the schedule alone
        (``seqreo`` depends on the data: count it from ``apply``'s shapes instead)."""
        if self.kind == "seqreo":
            raise ValueError("seqreo's length depends on the batch; sum apply()'s shapes")
        return transforms.shape_for_difficulty(self.kind, self.difficulty(iteration),
                                               global_batch_size, seq_length, self.model)

    def tensorboard_scalars(self, iteration: int, seq_length: int) -> dict[str, float]:
        """``curriculum/<metric>`` and ``seqlen/curriculum_seqlen`` for seqtru / seqres."""
        d = self.difficulty(iteration)
        if d is None:
            return {}
        return {f"curriculum/{self.name}": float(d),
                "seqlen/curriculum_seqlen": float(min(d, seq_length))}

    def state_dict(self) -> dict:
        return {} if self.scheduler is None else {"scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])


def sampler_scalars(sampler: CurriculumSampler | None) -> dict[str, float]:
    """``curriculum/<metric>`` for every sampling metric (current difficulty)."""
    if sampler is None:
        return {}
    return {f"curriculum/{k}": float(v) for k, v in sampler.current_difficulties.items()}


def sampled_values_histogram(sampler: CurriculumSampler | None) -> dict[str, torch.Tensor]:
    """Metric values of the last global batch, per metric, for a TensorBoard histogram."""
    if sampler is None or sampler.last_global_batch is None:
        return {}
    return {f"curriculum/{k}_sampled": torch.from_numpy(v.astype("float64"))
            for k, v in sampler.metric_values(sampler.last_global_batch).items()}
