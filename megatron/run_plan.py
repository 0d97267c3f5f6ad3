"""How long a run is, how many samples its datasets must hold, and its step planner: one
pure function.

``pretrain()`` sizes the run with ``plan_run``, and so does ``tools/analyze_data.py`` (the
analyzer must index exactly the training samples the run will build). It reads the
run's ``RunConfig`` and needs neither ``torch.distributed`` nor a model. The ``RunPlan`` it
returns is the one source of the run's length (the config keeps what the user gave:
``config.training.train_iters`` is None under ``--train-samples`` / ``--train-tokens``)
and carries the run's ``RunShape`` and ``StepPlanner``, built here once and passed down to
the data-efficiency runtime.

With ``--train-tokens`` the steps are counted under the data-efficiency schedule (curriculum
and random-LTD steps consume fewer tokens than ``global batch x seq length``), walking the
same pure step plans training uses; seqreo's steps depend on the data, so its run is sized
by the nominal estimate (tokens over ``global batch x seq length``). With
``--train-tokens`` beside ``--train-iters`` / ``--train-samples`` (Megatron-DeepSpeed's two
stop conditions) the run takes the fewer steps and the datasets are sized for the more.
"""
from __future__ import annotations

from dataclasses import dataclass

from megatron.core.enums import ModelType
from megatron.data_efficiency.step_plan import RunShape, StepPlanner
from megatron.run_config import RunConfig


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


def dataset_sizes(config: RunConfig, train_iters: int) -> tuple[int, int, int]:
    """Megatron's dataset sizes for ``train_iters`` steps: all training samples, and
    enough validation / test samples for every evaluation."""
    gbs, evaluation = config.training.global_batch_size, config.evaluation
    if evaluation.eval_full:   # one epoch each: --eval-full reads the whole split once
        return train_iters * gbs, 1, 1
    eval_interval = max(1, evaluation.eval_interval or train_iters)
    valid = (train_iters // eval_interval + 1) * evaluation.eval_iters * gbs
    return train_iters * gbs, valid, evaluation.eval_iters * gbs


def run_shape(config: RunConfig,
              model_type: ModelType = ModelType.encoder_or_decoder) -> RunShape:
    """The ``RunShape`` of a run (the one place it is read from the config)."""
    train = config.training
    return RunShape(global_batch_size=train.global_batch_size, seq_length=train.seq_length,
                    num_layers=config.model.num_layers, seed=config.data_efficiency.seed,
                    model=model_type.data_model, num_microbatches=train.num_microbatches,
                    pipeline_stages=config.parallel.pipeline_model_parallel_size)


def nominal_train_iters(config: RunConfig) -> int:
    """Steps from the flags alone: ``--train-iters``, else ``--train-samples`` or
    ``--train-tokens`` over ``global batch`` (x ``seq length``), rounded up."""
    train = config.training
    gbs = train.global_batch_size
    if train.train_iters is not None:
        return train.train_iters
    if train.train_samples is not None:
        return -(-train.train_samples // gbs)
    return -(-train.train_tokens // (gbs * train.seq_length))


def plan_run(config: RunConfig,
             model_type: ModelType = ModelType.encoder_or_decoder) -> RunPlan:
    """Size the run ``config`` describes and build its step planner.

    Args:
        config: the run (``megatron.arguments.run_config_from_args``).
        model_type: the model ``pretrain()`` trains (BERT: ``ModelType.encoder``).

    Returns:
        The ``RunPlan``.

    Raises:
        ValueError: the data-efficiency config does not fit the run (``StepPlanner``).
    """
    train = config.training
    planner = StepPlanner(config.data_efficiency, run_shape(config, model_type))
    nominal = nominal_train_iters(config)
    steps_are_a_stop = train.train_iters is not None or train.train_samples is not None
    steps = sized = nominal
    if train.train_tokens is not None:
        counted = planner.steps_for_tokens(train.train_tokens)
        if not steps_are_a_stop:
            steps = sized = nominal if counted is None else counted
        elif counted is not None:   # two stop conditions: the first reached wins
            steps, sized = min(nominal, counted), max(nominal, counted)
    return RunPlan(train_iters=steps, train_valid_test_num_samples=dataset_sizes(config, sized),
                   nominal_train_iters=nominal, stop_iters=train.train_iters,
                   stop_samples=train.train_samples, stop_tokens=train.train_tokens,
                   planner=planner)
