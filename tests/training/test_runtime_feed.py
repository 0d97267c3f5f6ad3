"""The micro-batch feed the loop builds for one step: it applies the step plan, checks the
batch against it, and gives every stage the token-drop plan and the sequence length."""
import torch

from megatron.data_efficiency.config import DataEfficiencyConfig
from megatron.data_efficiency.random_ltd import RandomLTDConfig
from megatron.data_efficiency.runtime import DataEfficiencyRuntime, RunShape
from megatron.data_efficiency.step_plan import StepPlanner
from megatron.training_data import MicrobatchFeed

LTD = RandomLTDConfig(enabled=True, min_seqlen=4, max_seqlen=8, total_steps=100, seq_per_step=2,
                      layer_ids=(1,))


def _runtime(random_ltd=LTD):
    cfg = DataEfficiencyConfig(enabled=True, random_ltd=random_ltd)
    return DataEfficiencyRuntime(StepPlanner(cfg, RunShape(global_batch_size=4, seq_length=8,
                                                           num_layers=3, num_microbatches=2)))


def test_feed_adds_each_microbatchs_drop_plan_drawn_at_once():
    rt = _runtime()
    plan = rt.plan_step(7)
    data = iter([{"text": torch.arange(18).view(2, 9)}] * 2)
    feed = MicrobatchFeed(data, rt, plan, seq_length=8, micro_batch_size=2)
    first, second = next(feed), next(feed)
    assert first["text"].shape == (2, 9) and first["seq_length"] == 8
    for m, batch in enumerate((first, second)):
        drop = batch["token_drop_plan"]
        assert (drop.iteration, drop.microbatch, drop.kept_length) == (7, m, 4)
        assert drop.indices.shape == (1, 2, 4)
    assert [s.seq_length for s in feed.observed] == [8, 8]


def test_feed_without_data_gives_plan_and_length_only():
    rt = _runtime()
    batch = next(MicrobatchFeed(None, rt, rt.plan_step(2), seq_length=8, micro_batch_size=2))
    assert batch["seq_length"] == 8 and batch["token_drop_plan"].indices.shape == (1, 2, 4)
    assert set(batch) == {"seq_length", "token_drop_plan"}
    evaluation = next(MicrobatchFeed(iter([{"text": torch.zeros(1, 9)}]), None, None, 8, 1))
    assert evaluation["token_drop_plan"] is None and evaluation["text"].shape == (1, 9)


def test_plain_runtime_feeds_the_batch_unchanged():
    rt = _runtime(RandomLTDConfig())
    text = torch.zeros(2, 9)
    batch = next(MicrobatchFeed(iter([{"text": text}]), rt, rt.plan_step(5), 8, 2))
    assert batch["text"] is text and batch["token_drop_plan"] is None
