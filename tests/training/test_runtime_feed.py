"""The data-efficiency seam: the plain runtime and the micro-batch feed the loop builds."""
import torch

from megatron.data_efficiency.runtime import DataEfficiencyRuntime, RunShape
from megatron.training_data import MicrobatchFeed


class _Recording(DataEfficiencyRuntime):
    """Records what the loop asks, to check the feed calls every hook."""

    def transform_batch(self, batch, iteration):
        return {**batch, "text": batch["text"][:, :5], "seen_iteration": iteration}

    def token_drop_plan(self, iteration, microbatch, seq_length=None):
        return ("plan", iteration, microbatch, seq_length)


def test_plain_runtime():
    rt = DataEfficiencyRuntime(RunShape(global_batch_size=8, seq_length=128,
                                                    num_layers=4))
    assert rt.tokens_for_step(0) == rt.tokens_for_step(99) == 8 * 128
    assert rt.seq_length_for_step(3) == 128
    assert rt.train_batch_sampler(None, 0, 2, 0, 1) is None
    batch = {"text": torch.zeros(2, 9)}
    assert rt.transform_batch(batch, 5) is batch
    assert rt.token_drop_plan(5, 0) is None and rt.tensorboard_scalars(5) == {}
    rt.load_state_dict(rt.state_dict())


def test_feed_applies_transform_and_plan_per_microbatch():
    rt = _Recording(RunShape(global_batch_size=4, seq_length=8, num_layers=2))
    data = iter([{"text": torch.arange(18).view(2, 9)}] * 2)
    feed = MicrobatchFeed(data, rt, iteration=7, seq_length=8)
    first, second = next(feed), next(feed)
    assert first["text"].shape == (2, 5) and first["seen_iteration"] == 7
    assert first["token_drop_plan"] == ("plan", 7, 0, 8)
    assert second["token_drop_plan"] == ("plan", 7, 1, 8)


def test_feed_without_data_gives_plan_and_length_only():
    rt = _Recording(RunShape(global_batch_size=4, seq_length=8, num_layers=2))
    batch = next(MicrobatchFeed(None, rt, iteration=2, seq_length=8))
    assert batch == {"token_drop_plan": ("plan", 2, 0, 8), "seq_length": 8}
    evaluation = next(MicrobatchFeed(iter([{"text": torch.zeros(1, 9)}]), None, 0, 8))
    assert evaluation["token_drop_plan"] is None and evaluation["text"].shape == (1, 9)
