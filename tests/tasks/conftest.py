"""A tiny pretrained BERT (pretrain_bert.py, a few steps on the BERT tests' corpus slice)
and a generated SST-2-style task over its vocabulary, built once per session."""
from __future__ import annotations

import os

import pytest

import pretrain_bert
from tasks.glue.synthetic import write_task
from tests.bert.conftest import bert_data  # noqa: F401  (the shared corpus slice)

BERT_SHAPE = ["--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "2",
              "--seq-length", "32", "--max-position-embeddings", "32"]


@pytest.fixture(scope="session")
def glue_env(bert_data, tmp_path_factory) -> dict:  # noqa: F811
    """``ckpt``: a BERT checkpoint (TP1 PP1, binary head), ``vocab``, ``task``: a folder
    with ``train.tsv`` (256 rows) and ``dev.tsv`` (128 rows), ``flags(*extra, epochs=2)``:
    a finetuning command line for it."""
    d = tmp_path_factory.mktemp("glue")
    ckpt = str(d / "bert")
    pretrain_bert.main([*BERT_SHAPE, "--micro-batch-size", "4", "--global-batch-size", "8",
                        "--train-iters", "4", "--lr", "3e-3", "--lr-warmup-iters", "1",
                        "--data-path", bert_data["data"], "--vocab-file", bert_data["vocab"],
                        "--split", "80,15,5", "--num-workers", "0", "--seed", "11",
                        "--data-cache-path", bert_data["dir"], "--save", ckpt,
                        "--log-interval", "4", "--eval-iters", "0"])
    task = write_task(bert_data["vocab"], str(d / "glue"), train=256, dev=128, seed=5)
    assert os.path.isfile(os.path.join(task, "train.tsv"))
    env = {"ckpt": ckpt, "vocab": bert_data["vocab"], "task": task, "dir": str(d)}
    return {**env, "flags": lambda *extra, epochs=2: finetune_flags(env, *extra, epochs=epochs)}


def finetune_flags(env: dict, *extra: str, epochs: int = 2) -> list[str]:
    """A finetuning command line for the generated task (the learning settings of the
    test: 32 steps per epoch at global batch 8)."""
    return ["--task", "SST-2", "--pretrained-checkpoint", env["ckpt"],
            "--train-data", os.path.join(env["task"], "train.tsv"),
            "--valid-data", os.path.join(env["task"], "dev.tsv"),
            "--vocab-file", env["vocab"], "--epochs", str(epochs),
            "--micro-batch-size", "4", "--global-batch-size", "8", "--lr", "2e-3",
            "--lr-decay-style", "linear", "--lr-warmup-fraction", "0.1",
            "--log-interval", "16", "--eval-interval", "16", "--eval-iters", "2", *extra]
