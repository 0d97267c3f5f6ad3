"""The training loop's one handle on data efficiency.

The loop calls every method here unconditionally, each step; it never asks which
curriculum or whether random-LTD is on. Each step it asks for the step's ``StepPlan``
(``plan_step``, pure), hands it to the micro-batch feed (``prepare_microbatch``: the
curriculum transform and the check that the batch's shape matches the plan;
``token_drop_plan``: the random-LTD plan with its indices drawn), and completes it after
the micro-batches ran (``finish_step``: seqreo's measured length, the sampled samples'
metric values). The LR scheduler, the consumed-token counters and the logger read the
finished plan.

The runtime is given the run's ``StepPlanner`` (built once, by ``run_plan.plan_run``) and
holds no schedule of its own: the curriculum sampler draws each global batch from that
planner's difficulties, so the batch a step trains on is the plan's by construction and
no per-micro-batch check of sample ids is needed. What does need checking is where the
sampler starts: ``train_batch_sampler`` positions it at the loop's iteration and refuses a
checkpoint's sampler state of another step.

With token-budget batches (``dynamic_batching``) the runtime packs the training set
from the analyzer's ``seqlen`` metric when the loader is built (``train_batch_sampler``),
gives the packing to the planner, and draws each micro-batch from the step plan
(``TokenBatchSampler``); ``prepare_microbatch`` checks the ids and cuts the micro-batch to
the plan's length. With a curriculum beside it, the packing is of the curriculum's draws,
step by step (``dynamic_batching.stream.CurriculumPacking``; its state is the sampler's in
the checkpoint).

With nothing configured it is the plain behaviour: Megatron's sampler, full sequences,
every layer sees every token, ``global_batch_size * seq_length`` tokens a step.

Iterations are 0-based here (the step about to run); the curriculum's own 1-based step
numbering is converted in ``step_plan.curriculum_step``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from megatron.core.devices import collective_device
from megatron.data_efficiency.config import CurriculumConfig, DataEfficiencyConfig
from megatron.data_efficiency.curriculum.sampler import (CurriculumSampler, Difficulties,
                                                         SamplerMetric)
from megatron.data_efficiency.curriculum.transforms import BatchShape
from megatron.data_efficiency.data_family import DataFamily, GPTSamples, TrainingSamples
from megatron.data_efficiency.dynamic_batching import data as token_data
from megatron.data_efficiency.dynamic_batching.packing import BatchLR
from megatron.data_efficiency.dynamic_batching.plan import cut_microbatch
from megatron.data_efficiency.dynamic_batching.stream import CurriculumPacking, DatasetOrder
from megatron.data_efficiency.random_ltd.plan import TokenDropPlan
from megatron.data_efficiency.step_plan import (RunShape, StepPlan, StepPlanner, batch_mismatch,
                                                curriculum_step)

__all__ = ["DataEfficiencyRuntime", "Parallelism", "RunShape", "StepPlan", "build_sampler"]


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
        planner: the run's ``StepPlanner`` (its config and ``RunShape``), built once.
        parallelism: this rank's DP / PP position and groups.
        samples: the flags that decide the training samples, for the analyzer index's
            fingerprint check (None: the index is not checked).
        family: how the model family numbers its samples (default: ``GPTSamples``).
    """

    def __init__(self, planner: StepPlanner, parallelism: Parallelism | None = None,
                 samples: TrainingSamples | None = None,
                 family: DataFamily | None = None) -> None:
        self.planner = planner
        self.par = parallelism or Parallelism()
        self.samples = samples
        self.family = family or GPTSamples()
        self.sampler: CurriculumSampler | None = None
        self.token_sampler: token_data.TokenBatchSampler | None = None
        self.packed_sampler: CurriculumSampler | None = None   # its draws packed per step

    @property
    def config(self) -> DataEfficiencyConfig:
        return self.planner.config

    @property
    def shape(self) -> RunShape:
        return self.planner.shape

    # -- the step ------------------------------------------------------------------------
    def plan_step(self, iteration: int) -> StepPlan:
        """The plan of the optimizer step ``iteration`` (0-based); pure."""
        return self.planner.plan(iteration)

    def prepare_microbatch(self, batch: dict, plan: StepPlan, micro_batch_size: int,
                           microbatch: int = 0) -> tuple[dict, BatchShape]:
        """Transform one collated *training* micro-batch to the plan and check its shape
        (its samples are the plan's by construction: the sampler draws from the plan; a
        token-budget micro-batch, number ``microbatch`` of the step on this rank, has its
        ids checked and is cut to the plan's length).

        Returns:
            The batch (with ``seq_length``) and the rows / length it has.

        Raises:
            RuntimeError: the batch has other rows / length (or samples) than planned.
        """
        if plan.step_batch is not None:
            ids, length = plan.step_batch.microbatch(self.par.dp_rank, self.par.dp_size,
                                                     microbatch, micro_batch_size)
            batch, shape = cut_microbatch(batch, ids, length,
                                          f"iteration {plan.iteration + 1}",
                                          plan.step_batch.truncate)
            batch["seq_length"] = shape.seq_length
            return batch, shape
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

    def lr_rule(self, iteration: int) -> BatchLR | None:
        """The LR scaling of step ``iteration`` (None: the schedule's LR), without planning
        the step: the loop sets the next step's LR after an optimizer step."""
        return self.planner.lr_rule(iteration)

    def token_drop_plan(self, plan: StepPlan, microbatch: int, batch_size: int,
                        seq_length: int, device: torch.device | str = "cpu"
                        ) -> TokenDropPlan | None:
        """The random-LTD plan of one training micro-batch (indices drawn now), or None.

        The draw is keyed by the step's global micro-batch number, not by (micro-batch,
        DP rank): rank r's micro-batch m holds the samples of global micro-batch
        ``m * dp + r`` (both samplers), so each sample drops the same tokens whatever the
        data-parallel size, and DP2 / DP4 train exactly as one process does."""
        global_microbatch = microbatch * self.par.dp_size + self.par.dp_rank
        return plan.token_drop_plan(global_microbatch, batch_size, seq_length, 0, device)

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
        if plan.step_batch is not None:     # a token-budget step of the sampler's draws
            values = sampled_values_histogram(self.packed_sampler, plan.iteration,
                                              plan.step_batch.sample_ids)
        else:
            values = sampled_values_histogram(self.sampler, plan.iteration)
        return plan.measured(seq, tokens, values)

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
        if self.config.dynamic_batching.enabled:
            return self._token_batch_sampler(dataset, micro_batch_size, first_iteration,
                                             state, train_iters)
        if train_iters is not None:
            self.config.check_num_epochs(train_iters * self.shape.global_batch_size,
                                         len(dataset), micro_batch_size * self.par.dp_size)
        cl = self.config.curriculum
        if not cl.enabled or not cl.sampling_metrics:
            return None
        fingerprint = (self.family.fingerprint(dataset, self.samples)
                       if self.samples is not None else None)
        self.sampler = self._curriculum_sampler(dataset, micro_batch_size, fingerprint,
                                                first_iteration)
        saved = (state or {}).get("curriculum_sampler")
        if saved is not None:
            if int(saved["step"]) != first_iteration:
                raise ValueError(f"curriculum sampler checkpoint is at step {saved['step']}, "
                                 f"the run resumes at iteration {first_iteration}")
            self.sampler.load_state_dict(saved)
        return self.sampler

    def _token_batch_sampler(self, dataset, micro_batch_size: int, first_iteration: int,
                             state: dict | None, train_iters: int | None):
        """Pack the training set (every rank the same way), give the packing to the
        planner and return the sampler of this rank's micro-batches."""
        cfg = self.config.dynamic_batching
        fingerprint = (self.family.fingerprint(dataset, self.samples)
                       if self.samples is not None else None)
        command = "" if self.samples is None else self.family.analyzer_command(
            self.samples, metrics="seqlen", save_path=cfg.metrics_path)
        try:
            seqlens = token_data.load_seqlens(cfg.metrics_path, len(dataset), fingerprint,
                                              command)
        except ValueError as err:
            if self.samples is None or "fingerprint" not in str(err):
                raise
            raise self.family.mismatch(err, dataset, self.samples) from None
        if self.config.curriculum.enabled:
            return self._curriculum_token_sampler(dataset, micro_batch_size, first_iteration,
                                                  state, seqlens, fingerprint, train_iters)
        batches = token_data.build_token_batches(
            cfg, seqlens, self.shape.global_batch_size, self.config.seed,
            log=(lambda line: print(line, flush=True)) if _rank0() else None)
        if train_iters is not None:
            token_data.check_num_epochs(self.config.num_epochs, train_iters,
                                        batches.num_batches, self.config.source)
        self.planner = self.planner.with_token_batches(batches)
        self.token_sampler = token_data.TokenBatchSampler(
            self.planner.step_batch, self.par.dp_rank, self.par.dp_size,
            micro_batch_size, self.shape.num_microbatches, first_iteration,
            batches.fingerprint())
        saved = (state or {}).get("token_batches")
        if saved is not None:
            self.token_sampler.load_state_dict(saved)
        return self.token_sampler

    def _curriculum_token_sampler(self, dataset, micro_batch_size: int, first_iteration: int,
                                  state: dict | None, seqlens, fingerprint: str | None,
                                  train_iters: int | None):
        """The curriculum chooses, the packing packs: the curriculum sampler's draws (or
        the dataset's order under a truncation-only curriculum) packed step by step."""
        cl, n = self.config.curriculum, len(dataset)
        if cl.sampling_metrics:
            draws = self.packed_sampler = self._curriculum_sampler(dataset, micro_batch_size,
                                                                   fingerprint)
        else:
            draws = DatasetOrder(n)
        epochs, cfg = self.config.num_epochs, self.config.dynamic_batching
        log = (lambda line: print(line, flush=True)) if _rank0() else None
        stream = CurriculumPacking(cfg, seqlens, draws, self.planner.truncation_length,
                                   self.shape.global_batch_size, self.shape.seq_length,
                                   sample_limit=None if epochs is None else int(epochs * n),
                                   log=log, first_step=first_iteration, train_iters=train_iters)
        if log is not None:
            log(f" > dynamic batching: each step packs the curriculum's draws "
                f"({'its sampler' if cl.sampling_metrics else 'the dataset order'}) into "
                f"{self.shape.global_batch_size} units of at most {cfg.max_tokens} tokens "
                f"(LR scaling {cfg.lr_scaling_method})")
        self.planner = self.planner.with_token_batches(stream)
        self.token_sampler = token_data.TokenBatchSampler(
            self.planner.step_batch, self.par.dp_rank, self.par.dp_size, micro_batch_size,
            self.shape.num_microbatches, first_iteration, stream.fingerprint(), stream)
        saved = (state or {}).get("token_batches")
        if saved is not None:
            self.token_sampler.load_state_dict(saved)
        return self.token_sampler

    def _curriculum_sampler(self, dataset, micro_batch_size: int, fingerprint: str | None,
                            first_step: int = 0) -> CurriculumSampler:
        """The curriculum sampler over the config's indexes (checked against the
        training samples: a mismatch names the analyzer command that indexes them)."""
        try:
            return build_sampler(self.config.curriculum, self.planner.difficulties,
                                 self.shape.global_batch_size, micro_batch_size,
                                 self.par.dp_rank, self.par.dp_size, self.shape.seed,
                                 expected_fingerprint=fingerprint, first_step=first_step,
                                 num_samples=len(dataset))
        except ValueError as err:
            if self.samples is None or "fingerprint" not in str(err):
                raise
            raise self.family.mismatch(err, dataset, self.samples) from None

    # -- checkpoint ----------------------------------------------------------------------
    def state_dict(self, iteration: int) -> dict:
        """The sampler's state after ``iteration`` steps (rewound past the batches a
        prefetching loader drew ahead). Schedules are pure functions of the iteration:
        nothing else is saved (the settings are in the checkpoint's run record,
        ``megatron.run_record``)."""
        state: dict = {}
        if self.sampler is not None:
            state["curriculum_sampler"] = self.sampler.state_dict(steps_consumed=iteration)
        if self.token_sampler is not None:
            state["token_batches"] = self.token_sampler.state_dict(iteration)
        return state


def build_sampler(config: CurriculumConfig, difficulties: Difficulties,
                  global_batch_size: int, micro_batch_size: int, dp_rank: int, dp_size: int,
                  seed: int, expected_fingerprint: str | None = None, first_step: int = 0,
                  num_samples: int | None = None) -> CurriculumSampler | None:
    """The curriculum sampler over the config's index metrics, or None if it has none.

    Args:
        difficulties: the step plan's difficulties per iteration
            (``StepPlanner.difficulties``): the sampler's only thresholds.

    Indexes are opened memory-mapped through ``analyzer.index_io.MetricIndex.open``; a
    fingerprint mismatch (index built for other data) is an error. A DeepSpeed
    ``DataAnalyzer`` index (no fingerprint) is read directly and must count
    ``num_samples`` (the training set's length) samples.
    """
    metrics = config.sampling_metrics if config.enabled else []
    if not metrics:
        return None
    built = [SamplerMetric(m.name, _open_index(m.index_path, expected_fingerprint, num_samples),
                           m.difficulty_type, m.schedule.max_difficulty, m.window_low)
             for m in metrics]
    return CurriculumSampler(built, difficulties, global_batch_size, micro_batch_size,
                             dp_rank, dp_size, seed=seed, first_step=first_step)


def _open_index(path, expected_fingerprint: str | None, num_samples: int | None):
    from megatron.data_efficiency.analyzer.deepspeed_index import (DeepSpeedIndexPaths,
                                                                   open_deepspeed_index)
    from megatron.data_efficiency.analyzer.index_io import MetricIndex
    if isinstance(path, DeepSpeedIndexPaths):
        return open_deepspeed_index(path, expected_num_samples=num_samples)
    return MetricIndex.open(path, expected_fingerprint)


def sampled_values_histogram(sampler: CurriculumSampler | None, iteration: int,
                             ids=None) -> dict[str, torch.Tensor]:
    """Metric values of the global batch drawn for ``iteration`` (0-based), or of the
    sample ``ids`` the step trained (a token-budget step of the sampler's draws), per
    metric, for a TensorBoard histogram (empty when the sampler no longer keeps that
    batch)."""
    if sampler is None:
        return {}
    batch = sampler.global_batch(curriculum_step(iteration)) if ids is None else ids
    if batch is None:
        return {}
    return {f"curriculum/{k}_sampled": torch.from_numpy(v.astype("float64"))
            for k, v in sampler.metric_values(batch).items()}


def _rank0() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


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
