"""How long a run is and how many samples its datasets must hold: one pure function.

``pretrain()`` sizes the run with ``plan_run``, and so does ``tools/analyze_data.py`` (the
analyzer must index exactly the training samples the run will build). It reads a
validated args namespace (``megatron.arguments.parse_args`` + ``validate_args``), needs
neither ``torch.distributed`` nor a model, and writes nothing to ``args``.

With ``--train-tokens`` the steps are counted under the data-efficiency schedule (curriculum
and random-LTD steps consume fewer tokens than ``global batch x seq length``), walking the
same pure step plans training uses; seqreo's steps depend on the data, so its run is sized
by the nominal estimate of ``validate_args``. With ``--train-tokens`` beside
``--train-iters`` / ``--train-samples`` (Megatron-DeepSpeed's two stop conditions) the run
takes the fewer steps and the datasets are sized for the more.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from megatron.core.enums import ModelType


@dataclass(frozen=True)
class RunPlan:
    """The size of a run.

    Attributes:
        train_iters: optimizer steps the run takes (the ``M`` of ``iteration N/ M``).
        train_valid_test_num_samples: samples the train / validation / test datasets must
            hold: every training step's, and enough for every evaluation.
        nominal_train_iters: ``validate_args``' estimate (``--train-samples`` or
            ``--train-tokens`` over ``global batch x seq length``), for the message when
            the schedule changes it.
    """
    train_iters: int
    train_valid_test_num_samples: tuple[int, int, int]
    nominal_train_iters: int


def dataset_sizes(args: argparse.Namespace, train_iters: int) -> tuple[int, int, int]:
    """Megatron's dataset sizes for ``train_iters`` steps: all training samples, and
    enough validation / test samples for every evaluation."""
    gbs = args.global_batch_size
    if args.eval_full:   # one epoch each: --eval-full reads the whole split once
        return train_iters * gbs, 1, 1
    eval_interval = max(1, args.eval_interval or train_iters)
    valid = (train_iters // eval_interval + 1) * args.eval_iters * gbs
    return train_iters * gbs, valid, args.eval_iters * gbs


def plan_run(args: argparse.Namespace,
             model_type: ModelType = ModelType.encoder_or_decoder) -> RunPlan:
    """Size the run described by validated ``args``.

    Args:
        args: from ``parse_args`` + ``validate_args`` (holds ``args.data_efficiency``).
        model_type: the model ``pretrain()`` trains (BERT: ``ModelType.encoder``).

    Returns:
        The ``RunPlan``; ``args`` is not changed.
    """
    from megatron.data_efficiency.step_plan import RunShape, StepPlanner
    nominal = args.train_iters
    steps = sized = nominal
    if args.train_tokens is not None:
        shape = RunShape(global_batch_size=args.global_batch_size, seq_length=args.seq_length,
                         num_layers=args.num_layers, seed=args.data_efficiency.seed,
                         model=model_type.data_model)
        counted = StepPlanner(args.data_efficiency, shape).steps_for_tokens(args.train_tokens)
        if not args.train_iters_is_stop:
            steps = sized = nominal if counted is None else counted
        elif counted is not None:   # two stop conditions: the first reached wins
            steps, sized = min(nominal, counted), max(nominal, counted)
    return RunPlan(train_iters=steps, train_valid_test_num_samples=dataset_sizes(args, sized),
                   nominal_train_iters=nominal)
