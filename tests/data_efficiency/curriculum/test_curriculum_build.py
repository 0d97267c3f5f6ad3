"""From a config to a sampler and a transform, as the runtime uses them."""
import numpy as np
import torch

from megatron.data_efficiency.analyzer.index_io import write_metric_index
from megatron.data_efficiency.config import config_from_dict
from megatron.data_efficiency.runtime import build_sampler, sampled_values_histogram
from megatron.data_efficiency.step_plan import CurriculumTransform, RunShape, StepPlanner


def test_seqtru_voc_config_builds_sampler_and_transform(tmp_path):
    voc = np.random.default_rng(0).random(500) * 10
    write_metric_index(str(tmp_path / "voc"), "voc", voc, "fp")
    cfg = config_from_dict({"enabled": True, "data_sampling": {"enabled": True,
        "curriculum_learning": {"enabled": True, "curriculum_metrics": {
            "voc": {"index_path": str(tmp_path / "voc"), "difficulty_type": "percentile",
                    "min_difficulty": 10, "max_difficulty": 100, "schedule_type": "fixed_linear",
                    "schedule_config": {"total_curriculum_step": 9, "difficulty_step": 10}},
            "seqtru": {"min_difficulty": 4, "max_difficulty": 16, "schedule_type": "fixed_linear",
                       "schedule_config": {"total_curriculum_step": 6, "difficulty_step": 4}}}}}})
    planner = StepPlanner(cfg, RunShape(global_batch_size=8, seq_length=16, num_layers=2))
    sampler = build_sampler(cfg.curriculum, planner.difficulties, 8, 2, 0, 2, seed=5,
                            expected_fingerprint="fp")
    tr = CurriculumTransform(cfg.curriculum, "gpt")
    it = iter(sampler)
    for iteration in range(12):
        mb = [next(it) for _ in range(sampler.num_micro_batches)]
        assert sampler.step == iteration + 1                # 0-based iteration, 1-based step
        rank = np.argsort(np.argsort(voc, kind="stable"), kind="stable")
        d = sampler.current_difficulties["voc"]
        assert (rank[sum(mb, [])] < 500 * d // 100).all()
        batch = {"text": torch.zeros(2, 17, dtype=torch.long)}
        want = min(16, max(4, (4 + 12 * (iteration + 1) // 6) // 4 * 4))
        assert tr.difficulty(iteration) == want
        out, shape = tr.apply(batch, tr.difficulty(iteration))
        assert out["text"].shape == (2, want + 1) and shape.seq_length == want
        hist = sampled_values_histogram(sampler, iteration)["curriculum/voc_sampled"]
        glob = sampler.global_batch(iteration + 1)
        assert hist.tolist() == voc[glob].tolist()
    assert sampled_values_histogram(sampler, 50) == {}     # never drawn
