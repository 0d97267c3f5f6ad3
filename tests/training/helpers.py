"""Tiny GPT runs through pretrain() for the training tests (CPU, fp32, synthetic data)."""
from __future__ import annotations

import numpy as np
import torch

from megatron.core.enums import ModelType
import pretrain_gpt

VOCAB = 60          # NullTokenizer: ids 0..59, 59 is EOD


class CountingDataset(torch.utils.data.Dataset):
    """Sample i: an arithmetic sequence mod (VOCAB - 1) from a seeded start and step, so
    a model can learn it and the loss falls."""

    def __init__(self, n: int, seq_length: int, seed: int) -> None:
        self.n, self.seq_length, self.seed = n, seq_length, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx: int) -> dict:
        rng = np.random.default_rng(self.seed * 100_003 + int(idx))
        start, step = rng.integers(0, VOCAB - 1), rng.integers(1, 4)
        text = (start + step * np.arange(self.seq_length + 1)) % (VOCAB - 1)
        return {"text": text.astype(np.int64), "sample_id": int(idx)}


def synthetic_provider(sizes: list[int]):
    seq = pretrain_gpt.get_run_config().training.seq_length
    return tuple(CountingDataset(max(n, 1), seq, seed) for n, seed in zip(sizes, (1, 2, 3)))


def tiny_gpt_flags(*extra: str, iters: int = 6) -> list[str]:
    return ["--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "2",
            "--seq-length", "16", "--max-position-embeddings", "16", "--micro-batch-size", "2",
            "--global-batch-size", "4", "--train-iters", str(iters), "--lr", "3e-3",
            "--min-lr", "3e-4", "--lr-warmup-iters", "2", "--lr-decay-style", "cosine",
            "--vocab-size", str(VOCAB), "--make-vocab-size-divisible-by", "8",
            "--num-workers", "0", "--log-interval", "1", "--eval-interval", "3",
            "--eval-iters", "2", "--seed", "7", "--use-cpu-initialization", *extra]


# --use-cpu-initialization (in tiny_gpt_flags) gives every (TP, PP) layout the weights of
# the single-process model with the same seed, so pretrain_gpt's own provider serves all.


def run_tiny(*extra: str, iters: int = 6, forward_step=None, model_provider=None):
    from megatron.training import pretrain
    return pretrain(synthetic_provider, model_provider or pretrain_gpt.model_provider, ModelType.encoder_or_decoder,
                    forward_step or pretrain_gpt.forward_step,
                    argv=tiny_gpt_flags(*extra, iters=iters))
