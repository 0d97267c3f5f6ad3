"""Curriculum learning: pacing (scheduler), curriculum sampler, batch transforms.

Steps are 1-based here (DeepSpeed's convention); ``step_plan.curriculum_step(iteration)``
converts the runtime's 0-based iteration.
"""
from megatron.data_efficiency.curriculum.sampler import CurriculumSampler, SamplerMetric
from megatron.data_efficiency.curriculum.scheduler import CurriculumScheduler, ScheduleConfig
from megatron.data_efficiency.curriculum.transforms import (BatchShape, seqreo, seqres, seqtru,
                                                            shape_for_difficulty)

__all__ = ["CurriculumSampler", "SamplerMetric", "CurriculumScheduler", "ScheduleConfig",
           "BatchShape", "seqtru", "seqres", "seqreo", "shape_for_difficulty"]
