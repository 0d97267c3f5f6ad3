"""pretrain_gpt.py with MoE + CL_seqtru_voc + random-LTD: trains, logs the MoE figures to
TensorBoard, and a resumed run reproduces the uninterrupted one bit for bit."""
import numpy as np
import pytest

import pretrain_gpt
from megatron.core.enums import ModelType
from megatron.training import pretrain
from tests.data_efficiency.test_pretrain_data_efficiency import (  # noqa: F401 (fixture)
    ITERS, LTD, _curriculum, _flags, indexed_corpus)

MOE = ["--num-experts", "4", "--moe-layer-freq", "2", "--moe-router-topk", "2",
       "--moe-train-capacity-factor", "1.0", "--moe-min-capacity", "0",
       "--moe-aux-loss-coeff", "0.01"]


def _run(prefix, *extra, iters=ITERS):
    return pretrain(pretrain_gpt.train_valid_test_datasets_provider, pretrain_gpt.model_provider,
                    ModelType.encoder_or_decoder, pretrain_gpt.forward_step,
                    argv=_flags(prefix, *extra, iters=iters))


def test_moe_cl_ltd_resume_is_bit_exact(indexed_corpus, tmp_path):
    prefix, index = indexed_corpus
    flags = [*_curriculum("seqtru_voc", index), *LTD, *MOE, "--hidden-dropout", "0.1",
             "--num-workers", "2"]
    straight = _run(prefix, *flags)
    losses = [loss for _, loss in straight.history]
    assert len(losses) == ITERS and all(np.isfinite(losses))
    save = str(tmp_path / "ckpt")
    first = _run(prefix, *flags, "--save", save, "--save-interval", "3", "--exit-interval", "3")
    assert first.iteration == 3
    resumed = _run(prefix, *flags, "--load", save, "--save", save, "--save-interval", "100")
    assert resumed.consumed_tokens == straight.consumed_tokens
    assert [loss for _, loss in resumed.history] == losses[3:]


def test_moe_changes_training_and_the_aux_loss_counts(indexed_corpus):
    """The MoE model is not the dense one, and the auxiliary loss reaches the gradients."""
    prefix, _ = indexed_corpus
    dense = [loss for _, loss in _run(prefix, iters=3).history]
    moe = [loss for _, loss in _run(prefix, *MOE, iters=3).history]
    no_aux = [loss for _, loss in _run(prefix, *MOE[:-1], "0", iters=3).history]
    assert moe != dense
    assert moe[0] == no_aux[0] and moe[1:] != no_aux[1:]


def test_tensorboard_moe_tags(indexed_corpus, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    prefix, index = indexed_corpus
    tb = str(tmp_path / "tb")
    _run(prefix, *_curriculum("seqtru_voc", index), *LTD, *MOE, "--tensorboard-dir", tb,
         iters=2)
    acc = EventAccumulator(tb, size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {"moe/load_balancing_loss", "moe/dropped_token_fraction"} <= scalars
    assert all(0.0 < v.value < 4.0 for v in acc.Scalars("moe/load_balancing_loss"))
    assert {"moe/expert_load/layer_0", "moe/expert_load/layer_2"} <= \
        set(acc.Tags()["histograms"])


@pytest.mark.parametrize("precision", ["--bf16", "--fp16"])
def test_moe_trains_in_half_precision(indexed_corpus, precision):
    """The router stays fp32 in its maths; fp16's loss scale also scales the aux loss."""
    prefix, index = indexed_corpus
    state = _run(prefix, *_curriculum("seqtru", index), *LTD, *MOE, precision, iters=3)
    losses = [loss for _, loss in state.history]
    assert len(losses) == 3 and all(np.isfinite(losses))
