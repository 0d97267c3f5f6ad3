"""The flags that name a run's training samples (which dataset, split, length, seed and
count), shared by the tools that index or check an index of those samples."""
from __future__ import annotations

import argparse


def add_training_set_args(p: argparse.ArgumentParser,
                          train_samples_help: str | None = None) -> None:
    """Register ``--model --short-seq-prob --bert-no-binary-head --split --seq-length --seed
    --train-samples --data-cache-path`` with ``pretrain_*.py``'s meanings and defaults."""
    p.add_argument("--model", choices=["gpt", "bert"], default="gpt",
                   help="which training samples are numbered (GPTDataset or BertDataset)")
    p.add_argument("--short-seq-prob", type=float, default=0.1, help="BERT: as in pretrain_bert.py")
    p.add_argument("--bert-no-binary-head", action="store_false", dest="bert_binary_head",
                   help="BERT: as in pretrain_bert.py (one segment, two special tokens per sample)")
    p.add_argument("--split", default="969,30,1")
    p.add_argument("--seq-length", type=int)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--train-samples", type=int, help=train_samples_help)
    p.add_argument("--data-cache-path", default=None)
