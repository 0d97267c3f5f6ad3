"""How long a run is and how many samples its datasets hold, from validated flags alone.

Training and ``tools/analyze_data.py`` both call :func:`plan_run`, so the analyzer
indexes exactly the training samples the run will build (no guessing of
``--train-samples``). Pure: no process group, no model, and the given ``args`` are not
changed.

Interim version built from today's training code (``DataEfficiencyRuntime.
steps_for_tokens`` via ``training.build_data_efficiency_runtime``, and
``training_data.train_valid_test_num_samples``); only the signature and the two fields of
``RunPlan`` are the interface.
"""
from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass


@dataclass(frozen=True)
class RunPlan:
    """The sizes of a run.

    Attributes:
        train_iters: optimizer steps (with ``--train-tokens``, the steps the curriculum and
            random-LTD schedules need to consume that many tokens).
        train_valid_test_num_samples: samples the train / valid / test datasets are built
            for (Megatron's sizing: ``train_iters x global batch``, and enough for every
            evaluation).
    """

    train_iters: int
    train_valid_test_num_samples: tuple[int, int, int]


def plan_run(args: argparse.Namespace) -> RunPlan:
    """The run's sizes from validated args (``parse_args`` + ``validate_args``)."""
    from megatron.training import build_data_efficiency_runtime
    from megatron.training_data import train_valid_test_num_samples
    sized = copy.copy(args)              # the runtime builder sets train_iters on its args
    build_data_efficiency_runtime(sized)
    samples = train_valid_test_num_samples(sized)
    return RunPlan(train_iters=int(sized.train_iters),
                   train_valid_test_num_samples=tuple(int(n) for n in samples))
