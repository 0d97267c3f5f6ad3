"""The training loop's one handle on data efficiency.

The loop calls every method here unconditionally, each step; it never asks which
curriculum or whether random-LTD is on. Each step it asks for the step's ``StepPlan``
(``plan_step``, pure), hands it to the micro-batch feed (``prepare_microbatch``: the
check that the batch is the one the curriculum sampler drew for this step, the curriculum
transform, the check that its shape matches the plan; ``token_drop_plan``: the random-LTD
plan with its indices drawn), and completes it after the micro-batches ran
(``finish_step``: seqreo's measured length, the sampled samples' metric values). The LR
scheduler, the consumed-token counters and the logger read the finished plan.

With nothing configured it is the plain behaviour: Megatron's sampler, full sequences,
every layer sees every token, ``global_batch_size * seq_length`` tokens a step.

Iterations are 0-based here (the step about to run); the curriculum's own 1-based step
numbering is converted in ``curriculum.build``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist

from megatron.core.devices import collective_device
from megatron.data_efficiency.config import DataEfficiencyConfig
from megatron.data_efficiency.curriculum.build import build_sampler, sampled_values_histogram
from megatron.data_efficiency.curriculum.transforms import BatchShape
from megatron.data_efficiency.random_ltd.plan import TokenDropPlan
from megatron.data_efficiency.step_plan import RunShape, StepPlan, StepPlanner, batch_mismatch
from megatron.errors import BadInputError

__all__ = ["DataEfficiencyRuntime", "Parallelism", "RunShape", "StepPlan"]


@dataclass
class Parallelism:
    """Where this rank sits, for the DP share of samples and the random-LTD draw key."""
    dp_rank: int = 0
    dp_size: int = 1
    dp_group: Any = None
    pp_size: int = 1
    pp_group: Any = None


class DataEfficiencyRuntime:
    """Step plans + curriculum sampler + batch transform + random-LTD draws.

    Args:
        config: the validated ``DataEfficiencyConfig``.
        shape: global sizes of the run.
        parallelism: this rank's DP / PP position and groups.
        index_fingerprint: ``fn(train_dataset) -> str``, the fingerprint the analyzer's
            index must carry for this run's training samples (None: not checked).
        index_hint: ``fn(train_dataset) -> str``, how to build a matching index (added to
            the error when the index does not match).
    """

    def __init__(self, config: DataEfficiencyConfig, shape: RunShape,
                 parallelism: Parallelism | None = None,
                 index_fingerprint: Callable[[Any], str] | None = None,
                 index_hint: Callable[[Any], str] | None = None) -> None:
        ltd_model = {"decoder": "gpt", "encoder": "bert"}.get(config.random_ltd.model_type)
        if ltd_model is not None and ltd_model != shape.model:
            raise ValueError(f"data_routing.random_ltd.model_type "
                             f"{config.random_ltd.model_type!r} contradicts the {shape.model} "
                             f"model being trained")
        self.config = config
        self.shape = shape
        self.par = parallelism or Parallelism()
        self.planner = StepPlanner(config, shape)
        self.index_fingerprint = index_fingerprint
        self.index_hint = index_hint
        self.sampler = None

    # -- the step ------------------------------------------------------------------------
    def plan_step(self, iteration: int) -> StepPlan:
        """The plan of the optimizer step ``iteration`` (0-based); pure."""
        return self.planner.plan(iteration)

    def prepare_microbatch(self, batch: dict, plan: StepPlan, microbatch: int,
                           micro_batch_size: int) -> tuple[dict, BatchShape]:
        """Check one collated *training* micro-batch against the plan and transform it.

        Returns:
            The batch (with ``seq_length``) and the rows / length it has.

        Raises:
            RuntimeError: the batch is not the plan's: sample ids the curriculum sampler
                did not draw for this step, or rows / length other than planned.
        """
        problem = self._ids_mismatch(batch, plan, microbatch)
        if problem is not None:
            raise RuntimeError(problem)
        if self.planner.transform is not None:
            batch, shape = self.planner.transform.apply(batch, plan.transform_difficulty,
                                                        self.par.dp_group)
        else:
            text = batch["text"]
            batch = dict(batch)
            shape = BatchShape(text.shape[0], text.shape[1] - (self.shape.model == "gpt"))
        problem = batch_mismatch(plan, shape, micro_batch_size)
        if problem is not None:
            raise RuntimeError(problem)
        batch["seq_length"] = shape.seq_length
        return batch, shape

    def _ids_mismatch(self, batch: dict, plan: StepPlan, microbatch: int) -> str | None:
        """The curriculum sampler's ids for (step, micro-batch) must be the batch's: the
        loader and the loop are on the same step (CPU tensors of the loader: no sync)."""
        if self.sampler is None or "sample_id" not in batch:
            return None
        expected = self.sampler.micro_batch_ids(plan.curriculum_step, microbatch)
        got = batch["sample_id"]
        if expected is not None and torch.equal(got, torch.as_tensor(expected, dtype=got.dtype)):
            return None
        return (f"iteration {plan.iteration + 1}, micro-batch {microbatch}: the data loader's "
                f"sample ids are not the curriculum sampler's for this step (sampler at "
                f"step {self.sampler.step})")

    def token_drop_plan(self, plan: StepPlan, microbatch: int, batch_size: int,
                        seq_length: int, device: torch.device | str = "cpu"
                        ) -> TokenDropPlan | None:
        """The random-LTD plan of one training micro-batch (indices drawn now), or None."""
        return plan.token_drop_plan(microbatch, batch_size, seq_length, self.par.dp_rank,
                                    device)

    def finish_step(self, plan: StepPlan, observed: list[BatchShape]) -> StepPlan:
        """The step's plan completed after its micro-batches ran: for seqreo the length
        and tokens this rank saw, summed over DP and agreed over the pipeline stages; for
        a curriculum sampler the metric values of the global batch the step trained on.
        The same consumed tokens on every rank."""
        seq, tokens = plan.seq_length, plan.consumed_tokens
        if plan.data_dependent:
            local = sum(plan.tokens_for(s.rows, s.seq_length) for s in observed)
            longest = max((s.seq_length for s in observed), default=0)
            tokens, seq = _agree(local, longest, self.par)
        return plan.measured(seq, tokens, sampled_values_histogram(self.sampler, plan.iteration))

    def steps_for_tokens(self, train_tokens: int) -> int | None:
        """Steps needed to consume ``train_tokens`` (None: seqreo)."""
        return self.planner.steps_for_tokens(train_tokens)

    # -- data ----------------------------------------------------------------------------
    def train_batch_sampler(self, dataset, micro_batch_size: int, first_iteration: int,
                            state: dict | None = None, train_iters: int | None = None):
        """The curriculum sampler over the analyzer's index, positioned at the loop's
        ``first_iteration`` (from the checkpoint's ``state`` when given), or None for the
        default ``MegatronPretrainingSampler``. With ``train_iters`` (the run's steps)
        the run's training samples are first checked against ``data_sampling.num_epochs``
        passes over ``dataset``, whichever sampler draws them.

        Raises:
            ValueError: the index does not describe this run's samples (with the analyzer
                command that builds one that does), or the checkpoint's sampler is at
                another step than the loop.
            BadConfigError: the run draws more samples than ``num_epochs`` allows.
        """
        if train_iters is not None:
            self.config.check_num_epochs(train_iters * self.shape.global_batch_size,
                                         len(dataset), micro_batch_size * self.par.dp_size)
        cl = self.config.curriculum
        if not cl.enabled or not cl.sampling_metrics:
            return None
        fingerprint = (self.index_fingerprint(dataset) if self.index_fingerprint is not None
                       else None)
        try:
            self.sampler = build_sampler(cl, self.shape.global_batch_size, micro_batch_size,
                                         self.par.dp_rank, self.par.dp_size, self.shape.seed,
                                         expected_fingerprint=fingerprint,
                                         first_step=first_iteration,
                                         num_samples=len(dataset))
        except ValueError as err:
            if self.index_hint is None or "fingerprint" not in str(err):
                raise
            raise BadInputError(f"{err}\n{self.index_hint(dataset)}") from None
        saved = (state or {}).get("curriculum_sampler")
        if saved is not None:
            if int(saved["step"]) != first_iteration:
                raise ValueError(f"curriculum sampler checkpoint is at step {saved['step']}, "
                                 f"the run resumes at iteration {first_iteration}")
            self.sampler.load_state_dict(saved)
        return self.sampler

    # -- checkpoint ----------------------------------------------------------------------
    def state_dict(self, iteration: int) -> dict:
        """The sampler's state after ``iteration`` steps (rewound past the batches a
        prefetching loader drew ahead). Schedules are pure functions of the iteration:
        nothing else is saved (the settings are in the checkpoint's run record,
        ``megatron.run_record``)."""
        state: dict = {}
        if self.sampler is not None:
            state["curriculum_sampler"] = self.sampler.state_dict(steps_consumed=iteration)
        return state


def _agree(local_tokens: int, longest: int, par: Parallelism) -> tuple[int, int]:
    """Tokens summed over the data-parallel group and the longest length (MAX), then the
    same values on every pipeline stage (stages without data saw nothing, so MAX picks the
    stages that did); one device-to-host copy for the step."""
    if not dist.is_initialized() or (par.dp_size == 1 and par.pp_size == 1):
        return int(local_tokens), int(longest)
    device = collective_device(par.dp_group if par.dp_size > 1 else par.pp_group)
    tokens = torch.tensor([local_tokens], dtype=torch.long, device=device)
    length = torch.tensor([longest], dtype=torch.long, device=device)
    if par.dp_size > 1:
        dist.all_reduce(tokens, group=par.dp_group)
        dist.all_reduce(length, op=dist.ReduceOp.MAX, group=par.dp_group)
    if par.pp_size > 1:
        for t in (tokens, length):
            dist.all_reduce(t, op=dist.ReduceOp.MAX, group=par.pp_group)
    values = torch.cat([tokens, length]).tolist()
    return int(values[0]), int(values[1])
