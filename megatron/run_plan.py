"""How long a run is, how many samples its datasets must hold, and its step planner: one
pure function.

``pretrain()`` sizes the run with ``plan_run``, and so does ``tools/analyze_data.py`` (the
analyzer must index exactly the training samples the run will build). It reads a
validated args namespace (``megatron.arguments.parse_args`` + ``validate_args``), needs
neither ``torch.distributed`` nor a model, and writes nothing to ``args``. The
``RunPlan`` it returns is the one source of the run's length (``validate_args`` derives
none: ``args.train_iters`` stays what the user gave) and carries the run's ``RunShape``
and ``StepPlanner``, built here once and passed down to the data-efficiency runtime.

With ``--train-tokens`` the steps are counted under the data-efficiency schedule (curriculum
and random-LTD steps consume fewer tokens than ``global batch x seq length``), walking the
same pure step plans training uses; seqreo's steps depend on the data, so its run is sized
by the nominal estimate (tokens over ``global batch x seq length``). With
``--train-tokens`` beside ``--train-iters`` / ``--train-samples`` (Megatron-DeepSpeed's two
stop conditions) the run takes the fewer steps and the datasets are sized for the more.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from megatron.core.enums import ModelType
from megatron.data_efficiency.step_plan import RunShape, StepPlanner


@dataclass(frozen=True)
class RunPlan:
    """The size of a run, its stopping rule and its step planner.

    Attributes:
        train_iters: optimizer steps the run takes (the ``M`` of ``iteration N/ M``; the
            bound of ``data_sampling.num_epochs``).
        train_valid_test_num_samples: samples the train / validation / test datasets must
            hold: every training step's, and enough for every evaluation.
        nominal_train_iters: the estimate from the flags alone (``--train-iters``, or
            ``--train-samples`` / ``--train-tokens`` over the nominal step), for the
            message when the schedule changes it.
        stop_iters, stop_samples, stop_tokens: the stop conditions the user gave
            (``--train-iters``, ``--train-samples``, ``--train-tokens``; None: not given).
        planner: the run's ``StepPlanner`` (``planner.shape`` is its ``RunShape``).
    """
    train_iters: int
    train_valid_test_num_samples: tuple[int, int, int]
    nominal_train_iters: int
    stop_iters: int | None = None
    stop_samples: int | None = None
    stop_tokens: int | None = None
    planner: StepPlanner | None = None

    def done(self, iteration: int, consumed_samples: int, consumed_tokens: int) -> bool:
        """The stopping rule: every given stop condition is checked and the first reached
        ends the run (Megatron-DeepSpeed: ``--train-tokens`` beside ``--train-iters`` /
        ``--train-samples``)."""
        if self.stop_tokens is not None and consumed_tokens >= self.stop_tokens:
            return True
        if self.stop_samples is not None:
            return consumed_samples >= self.stop_samples
        return self.stop_iters is not None and iteration >= self.stop_iters


def dataset_sizes(args: argparse.Namespace, train_iters: int) -> tuple[int, int, int]:
    """Megatron's dataset sizes for ``train_iters`` steps: all training samples, and
    enough validation / test samples for every evaluation."""
    gbs = args.global_batch_size
    if args.eval_full:   # one epoch each: --eval-full reads the whole split once
        return train_iters * gbs, 1, 1
    eval_interval = max(1, args.eval_interval or train_iters)
    valid = (train_iters // eval_interval + 1) * args.eval_iters * gbs
    return train_iters * gbs, valid, args.eval_iters * gbs


def run_shape(args: argparse.Namespace,
              model_type: ModelType = ModelType.encoder_or_decoder) -> RunShape:
    """The ``RunShape`` of validated ``args`` (the one place it is read from flags)."""
    return RunShape(global_batch_size=args.global_batch_size, seq_length=args.seq_length,
                    num_layers=args.num_layers, seed=args.data_efficiency.seed,
                    model=model_type.data_model, num_microbatches=args.num_microbatches,
                    pipeline_stages=args.pipeline_model_parallel_size)


def nominal_train_iters(args: argparse.Namespace) -> int:
    """Steps from the flags alone: ``--train-iters``, else ``--train-samples`` or
    ``--train-tokens`` over ``global batch`` (x ``seq length``), rounded up."""
    gbs = args.global_batch_size
    if args.train_iters is not None:
        return args.train_iters
    if args.train_samples is not None:
        return -(-args.train_samples // gbs)
    return -(-args.train_tokens // (gbs * args.seq_length))


def plan_run(args: argparse.Namespace,
             model_type: ModelType = ModelType.encoder_or_decoder) -> RunPlan:
    """Size the run described by validated ``args`` and build its step planner.

    Args:
        args: from ``parse_args`` + ``validate_args`` (holds ``args.data_efficiency``).
        model_type: the model ``pretrain()`` trains (BERT: ``ModelType.encoder``).

    Returns:
        The ``RunPlan``; ``args`` is not changed.

    Raises:
        ValueError: the data-efficiency config does not fit the run (``StepPlanner``).
    """
    planner = StepPlanner(args.data_efficiency, run_shape(args, model_type))
    nominal = nominal_train_iters(args)
    steps_are_a_stop = args.train_iters is not None or args.train_samples is not None
    steps = sized = nominal
    if args.train_tokens is not None:
        counted = planner.steps_for_tokens(args.train_tokens)
        if not steps_are_a_stop:
            steps = sized = nominal if counted is None else counted
        elif counted is not None:   # two stop conditions: the first reached wins
            steps, sized = min(nominal, counted), max(nominal, counted)
    return RunPlan(train_iters=steps, train_valid_test_num_samples=dataset_sizes(args, sized),
                   nominal_train_iters=nominal, stop_iters=args.train_iters,
                   stop_samples=args.train_samples, stop_tokens=args.train_tokens,
                   planner=planner)
