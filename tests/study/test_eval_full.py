"""--eval-full (every complete global batch of the validation split) and GPT's next-token
accuracy in evaluation ('lm accuracy'), which the study reports."""
from __future__ import annotations

import pytest
import torch

import pretrain_gpt
from megatron.core import parallel_state as ps
from megatron.core.enums import ModelType
from megatron.model import GPTModel, TransformerConfig
from megatron.training import pretrain
from tests.dist_utils import run_distributed
from tests.training.helpers import CountingDataset, tiny_gpt_flags

VALID_SAMPLES = 22   # global batch 4: five complete batches, two samples left over


def _provider(sizes):
    seq = pretrain_gpt.get_run_config().training.seq_length
    return CountingDataset(max(sizes[0], 1), seq, 1), CountingDataset(VALID_SAMPLES, seq, 2), None


def _run(*extra):
    """Train the tiny GPT; count the micro-batches each evaluation reads."""
    seen = []

    def forward_step(data_iterator, model):
        if not model.training:
            seen.append(1)
        return pretrain_gpt.forward_step(data_iterator, model)
    state = pretrain(_provider, pretrain_gpt.model_provider, ModelType.encoder_or_decoder,
                     forward_step,
                     argv=tiny_gpt_flags(*extra, iters=3))
    return state, len(seen)


def test_eval_full_reads_the_whole_split_once():
    # tiny_gpt_flags: eval at iteration 3 (the end), micro-batch 2 of global batch 4
    full, full_reads = _run("--eval-full", "--eval-iters", "2")
    assert full_reads == (VALID_SAMPLES // 4) * 2           # not --eval-iters' 2 batches
    five, five_reads = _run("--eval-iters", "5")
    assert five_reads == 10
    assert full.last_validation["lm loss"] == pytest.approx(five.last_validation["lm loss"])
    two, two_reads = _run("--eval-iters", "2")
    assert two_reads == 4
    assert two.last_validation["lm loss"] != pytest.approx(full.last_validation["lm loss"])
    assert 0.0 <= full.last_validation["lm accuracy"] <= 1.0


def _model():
    torch.manual_seed(3)
    return GPTModel(TransformerConfig(num_layers=2, hidden_size=32, num_attention_heads=4,
                                      padded_vocab_size=64, max_position_embeddings=16,
                                      hidden_dropout=0.0, attention_dropout=0.0)).eval()


def test_eval_loss_from_logits_equals_the_training_loss_and_accuracy_is_argmax():
    model = _model()
    gen = torch.Generator().manual_seed(5)
    tokens, labels = torch.randint(0, 64, (2, 16), generator=gen), torch.randint(0, 64, (2, 16), generator=gen)
    mask = (torch.rand(2, 16, generator=gen) > 0.2).float()
    pos = torch.arange(16).expand(2, 16)
    with torch.no_grad():
        train_loss, _ = pretrain_gpt.loss_func(mask, model(tokens, pos, None, labels=labels))
        logits = model(tokens, pos, None)
        eval_loss, reported = pretrain_gpt.eval_loss_func(mask, labels, logits)
    assert eval_loss.item() == pytest.approx(train_loss.item(), rel=1e-6)
    labels_hit = logits.argmax(-1)           # make every other row's labels the argmax
    labels_hit[1] = (labels_hit[1] + 1) % 64
    _, reported = pretrain_gpt.eval_loss_func(torch.ones(2, 16), labels_hit, logits)
    assert reported["lm accuracy"].item() == pytest.approx(0.5)


def _tp_accuracy(rank, world_size, logits, labels):
    ps.initialize_model_parallel(tensor_model_parallel_size=2)
    part = logits.shape[-1] // 2
    return pretrain_gpt.next_token_accuracy(logits[..., rank * part:(rank + 1) * part], labels)


def test_accuracy_under_tensor_parallel_matches_the_whole_vocabulary():
    gen = torch.Generator().manual_seed(9)
    logits = torch.randn(3, 8, 32, generator=gen)
    labels = torch.randint(0, 32, (3, 8), generator=gen)
    labels[0] = logits[0].argmax(-1)                     # some right, in either half
    expected = (logits.argmax(-1) == labels).float()
    assert expected.sum() >= 8
    for out in run_distributed(_tp_accuracy, 2, logits, labels):
        assert torch.equal(out, expected)
