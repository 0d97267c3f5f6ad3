"""Finetune and score a pretrained BERT on a downstream task (Megatron's ``tasks/main.py``).

    python tasks/main.py --task MNLI --pretrained-checkpoint ckpt/bert \\
        --train-data GLUE/MNLI/train.tsv \\
        --valid-data GLUE/MNLI/dev_matched.tsv GLUE/MNLI/dev_mismatched.tsv \\
        --tokenizer-type BertWordPieceLowerCase --vocab-file vocab.txt \\
        --epochs 3 --micro-batch-size 8 --global-batch-size 32 --lr 2e-5 \\
        --lr-decay-style linear --lr-warmup-fraction 0.1 --seq-length 128 \\
        --log-interval 10 --eval-interval 100 --eval-iters 50 --weight-decay 0.1 \\
        --save runs/mnli

Tasks: the GLUE TSVs of MNLI, QQP, QNLI, SST-2, CoLA, STS-B, MRPC, RTE
(``tasks/glue/``) and RACE's folders (``tasks/race/``). Every Megatron training flag
applies (layout, batch, optimizer, LR schedule, fp16 / bf16, Megatron-DeepSpeed's
``--deepspeed_config`` and friends); the model-shape flags may be left out (the
checkpoint's are used). After every epoch each ``--valid-data`` file is scored
(`` > |epoch: 0| metrics for dev-matched: correct / total = ...``); the scores go to
``--results-file`` (default ``SAVE/results.json``). Launch with ``torchrun`` for tensor,
pipeline and data parallelism.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))

from megatron.errors import run_main  # noqa: E402


def task_specs() -> dict:
    """Every task ``--task`` can name."""
    from tasks.glue.finetune import glue_specs
    from tasks.race.finetune import race_specs
    return {**glue_specs(), **race_specs()}


def main(argv: list[str] | None = None) -> dict | None:
    """Run the task of ``--task``; returns the results on the last rank."""
    from tasks.finetune_utils import finetune
    return finetune(task_specs(), argv)


if __name__ == "__main__":
    run_main(main)
