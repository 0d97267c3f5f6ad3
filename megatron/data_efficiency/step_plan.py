"""One frozen plan per training step: every data-efficiency decision of the step.

``StepPlanner.plan(iteration)`` is a pure function of the config and the 0-based
iteration: the sequence length and rows, the curriculum difficulties, the random-LTD kept
length and dropping layers, the tokens the step consumes, and the TensorBoard scalars. The
micro-batch feed, the pipeline shapes, the batch transform, random-LTD, the token
accounting, the LR scheduler and the logger all read that one value, and the curriculum
sampler draws from its difficulties (``StepPlanner.difficulties``): the planner is the
only thing that evaluates a pacing function; nobody recomputes a schedule. ``seqreo``
(BERT) cuts each batch to its longest sample, so its plan is completed from what the
batches showed (``StepPlan.measured``). With token-budget batches
(``dynamic_batching``) the step's samples, tokens, micro-batches and LR rule come from the
packing the runtime attaches (``with_token_batches``): still a pure function of the
iteration, except with a curriculum: then each step is packed from the curriculum's draws
after the steps before it (``CurriculumPacking``), once, in order.

Iterations are 0-based here; the curriculum counts steps from 1 (DeepSpeed's
convention): ``curriculum_step`` is the one place that converts. ``plan_run``
(``megatron/run_plan.py``) builds the run's ``RunShape`` and ``StepPlanner`` once; the
runtime, the sampler and the run's sizing all use that planner.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import torch

from megatron.data_efficiency.config import CurriculumConfig, DataEfficiencyConfig
from megatron.data_efficiency.curriculum import transforms
from megatron.data_efficiency.curriculum.scheduler import CurriculumScheduler
from megatron.data_efficiency.curriculum.transforms import BatchShape, shape_for_difficulty
from megatron.data_efficiency.dynamic_batching import plan as token_plan
from megatron.data_efficiency.dynamic_batching.packing import BatchLR, TokenBatches
from megatron.data_efficiency.dynamic_batching.stream import CurriculumPacking
from megatron.data_efficiency.random_ltd.plan import TokenDropPlan
from megatron.data_efficiency.random_ltd.scheduler import RandomLTDScheduler
from megatron.data_efficiency.token_accounting import tokens_per_step


_KEEP = 1024   # iterations of difficulties a planner keeps (a loader prefetches far fewer)


def curriculum_step(iteration: int) -> int:
    """1-based curriculum step of the optimizer step ``iteration`` (0-based)."""
    return iteration + 1


@dataclass(frozen=True)
class RunShape:
    """Sizes the planner needs; built once from the validated flags.

    Attributes:
        model: ``"gpt"`` or ``"bert"`` (which batch transforms apply).
        pipeline_stages: pipeline-parallel size (shape-changing transforms are refused
            with more than one stage).
    """
    global_batch_size: int
    seq_length: int
    num_layers: int
    seed: int = 1234
    model: str = "gpt"
    num_microbatches: int = 1
    pipeline_stages: int = 1


@dataclass(frozen=True)
class StepPlan:
    """Everything data efficiency decides for one optimizer step.

    Attributes:
        iteration: 0-based optimizer step.
        rows: sequences of the global batch the model runs (``seqres``: more than GBS).
        global_batch_size: samples of the global batch (before any reshaping).
        seq_length: input tokens per sequence (``seqreo`` before ``measured``: the upper
            bound ``--seq-length``).
        num_microbatches: micro-batches per DP rank in the step.
        transform: ``"seqtru"``, ``"seqres"``, ``"seqreo"`` or None.
        transform_difficulty: the seqtru / seqres difficulty in force (tokens) or None.
        difficulties: curriculum metric name -> difficulty in force (all metrics).
        kept_length: random-LTD kept tokens ``r`` (None: no layer drops this step).
        dropping_layers: global ids of the layers that drop (empty when none).
        num_layers: layers of the whole model (token accounting).
        consumed_tokens: layer-weighted tokens of the step (``token_accounting``).
        ltd_seed: seed of the random-LTD draws.
        data_dependent: the shapes are measured from the batches (``seqreo``).
        step_batch: the step's token-budget batch (``dynamic_batching``; None: off):
            its samples are ``global_batch_size`` and ``rows``, its real tokens
            ``consumed_tokens``, ``seq_length`` the longest micro-batch's length.
    """
    iteration: int
    rows: int
    seq_length: int
    global_batch_size: int
    num_microbatches: int
    transform: str | None
    transform_difficulty: int | None
    difficulties: Mapping[str, float]
    kept_length: int | None
    dropping_layers: frozenset[int]
    num_layers: int
    consumed_tokens: int
    ltd_seed: int = 0
    data_dependent: bool = False
    sampled_values: Mapping[str, torch.Tensor] = field(default_factory=dict, compare=False)
    step_batch: token_plan.StepBatch | None = field(default=None, compare=False)

    @property
    def lr_rule(self) -> BatchLR | None:
        """The step's LR scaling (``dynamic_batching``'s ``lr_scaling_method``), or None."""
        return None if self.step_batch is None else self.step_batch.lr

    @property
    def curriculum_step(self) -> int:
        """DeepSpeed's 1-based step number of this iteration."""
        return curriculum_step(self.iteration)

    def tokens_for(self, rows: int, seq_length: int) -> int:
        """Layer-weighted tokens of ``rows`` sequences of ``seq_length`` under this plan."""
        kept = None if self.kept_length is None else min(self.kept_length, seq_length)
        return tokens_per_step(rows, seq_length, self.num_layers,
                               len(self.dropping_layers) if kept is not None else 0, kept)

    def token_drop_plan(self, microbatch: int, batch_size: int, seq_length: int,
                        dp_rank: int, device: torch.device | str = "cpu"
                        ) -> TokenDropPlan | None:
        """The micro-batch's random-LTD plan with all its layers' indices drawn now, or
        None when no token is dropped (off, or ``r >= S``)."""
        if self.kept_length is None or self.kept_length >= seq_length:
            return None
        return TokenDropPlan.draw(self.dropping_layers, self.kept_length, self.ltd_seed,
                                  self.iteration, microbatch, dp_rank, batch_size, seq_length,
                                  device)

    def measured(self, seq_length: int, consumed_tokens: int,
                 sampled_values: Mapping[str, torch.Tensor] | None = None) -> StepPlan:
        """The plan completed with what the step's batches showed (``seqreo``'s length,
        the tokens it consumed, the sampled samples' metric values)."""
        return dataclasses.replace(self, seq_length=seq_length, consumed_tokens=consumed_tokens,
                                   sampled_values=MappingProxyType(dict(sampled_values or {})))

    def scalars(self) -> dict[str, float]:
        """Megatron-DeepSpeed's TensorBoard scalars of this step."""
        out = {f"curriculum/{k}": float(v) for k, v in self.difficulties.items()}
        if self.transform_difficulty is not None:
            out["seqlen/curriculum_seqlen"] = float(self.seq_length)
        if self.transform is not None:
            out["seqlen/actual_seq_length"] = float(self.seq_length)
        if self.dropping_layers:
            r = self.seq_length if self.kept_length is None else self.kept_length
            out["seqlen/random_ltd_reserved_length"] = float(min(r, self.seq_length))
        if self.step_batch is not None:
            out["batching/samples"] = float(self.step_batch.samples)
            out["batching/tokens"] = float(self.step_batch.tokens)
            out["batching/lr_scale"] = float(self.step_batch.lr(1.0))
        return out


class StepPlanner:
    """Computes ``StepPlan``s: pure functions of ``(config, iteration)`` (except token-budget
    batches composed with a curriculum: each step packed once, in order, from the draws).

    Args:
        config: the validated data-efficiency config (curriculum + random-LTD).
        shape: the run's sizes.

    Raises:
        ValueError: a shape-changing transform (seqres, seqreo) with pipeline stages, a
            random-LTD ``model_type`` other than the model trained, or token-budget
            batches where they are refused (``dynamic_batching.plan.refusal``).
    """

    def __init__(self, config: DataEfficiencyConfig, shape: RunShape,
                 token_batches: TokenBatches | CurriculumPacking | None = None) -> None:
        ltd_model = {"decoder": "gpt", "encoder": "bert"}.get(config.random_ltd.model_type)
        if ltd_model is not None and ltd_model != shape.model:
            raise ValueError(f"data_routing.random_ltd.model_type "
                             f"{config.random_ltd.model_type!r} contradicts the {shape.model} "
                             f"model being trained")
        batching = config.dynamic_batching
        problem = token_plan.refusal(batching.enabled, shape.model, shape.pipeline_stages,
                                     config.curriculum.enabled, config.random_ltd.enabled,
                                     batching.sequence_picking_order)
        if problem is not None:
            raise ValueError(problem)
        self.config = config
        self.shape = shape
        self.token_batches = token_batches
        self._recent: dict[int, Mapping[str, float]] = {}   # iteration -> difficulties
        cl = config.curriculum
        transform = CurriculumTransform(cl, shape.model) if cl.enabled else None
        self.transform = transform if transform is not None and transform.kind else None
        self.sampling = [(m.name, CurriculumScheduler(m.schedule))
                         for m in (cl.sampling_metrics if cl.enabled else [])]
        ltd = RandomLTDScheduler(config.random_ltd, shape.num_layers, shape.seq_length,
                                 shape.seed)
        self.random_ltd = ltd if ltd.enabled else None
        if shape.pipeline_stages > 1 and self.kind in ("seqres", "seqreo"):
            raise ValueError(f"curriculum transform {self.kind} changes the micro-batch shape "
                             "per batch, which pipeline stages cannot agree on without reading "
                             "data; use seqtru with --pipeline-model-parallel-size > 1")

    @property
    def kind(self) -> str | None:
        return None if self.transform is None else self.transform.kind

    def difficulties(self, iteration: int) -> Mapping[str, float]:
        """Curriculum metric -> difficulty in force at the optimizer step ``iteration``
        (0-based): the step plan's ``difficulties``, which the curriculum sampler draws
        from. Pure; the last ``_KEEP`` iterations' values are kept, so the plan and the
        sampler (a few steps ahead with a prefetching loader) read one computed value."""
        found = self._recent.get(iteration)
        if found is None:
            step = curriculum_step(iteration)
            out = {name: sched.difficulty_at(step) for name, sched in self.sampling}
            if self.kind in ("seqtru", "seqres"):
                out[self.transform.name] = self.transform.difficulty(iteration)
            found = MappingProxyType(out)
            if len(self._recent) >= _KEEP:
                del self._recent[next(iter(self._recent))]
            self._recent[iteration] = found
        return found

    def truncation_length(self, iteration: int) -> int | None:
        """The length a truncation curriculum (seqtru) cuts the samples of step
        ``iteration`` to (BERT's rounding), or None."""
        if self.kind != "seqtru":
            return None
        d = int(self.difficulties(iteration)[self.transform.name])
        return transforms.bert_seqtru_length(d) if self.shape.model == "bert" else d

    def with_token_batches(self, token_batches: TokenBatches | CurriculumPacking
                           ) -> StepPlanner:
        """This planner with the run's packing (built from the training data): the
        dataset packed once, or with a curriculum the packing of its draws step by step
        (which reads this planner's difficulties: the new planner shares them)."""
        planner = StepPlanner(self.config, self.shape, token_batches)
        planner._recent = self._recent
        return planner

    def step_batch(self, iteration: int) -> token_plan.StepBatch:
        """Step ``iteration``'s token-budget batch (``plan(iteration).step_batch``; the
        sampler draws it ahead of the loop): batch ``iteration % B`` of the packed
        dataset, or the step packed from the curriculum's draws (packed once, in order).

        Raises:
            RuntimeError: no packing attached yet.
        """
        tb = self.token_batches
        if tb is None:
            raise RuntimeError("dynamic batching: the step plans need the packing of the "
                               "training data (DataEfficiencyRuntime.train_batch_sampler)")
        if isinstance(tb, CurriculumPacking):
            return tb.step_batch(iteration)
        index = iteration % tb.num_batches
        lr = BatchLR(self.config.dynamic_batching.lr_scaling_method,
                     self.shape.global_batch_size, tb.batch_samples(index))
        return token_plan.StepBatch(tb, index, lr, self.shape.seq_length)

    def plan(self, iteration: int) -> StepPlan:
        """The plan of the optimizer step ``iteration`` (0-based)."""
        if self.config.dynamic_batching.enabled:
            return self._token_budget_plan(iteration)
        s, gbs = self.shape.seq_length, self.shape.global_batch_size
        difficulties = self.difficulties(iteration)
        d = difficulties[self.transform.name] if self.kind in ("seqtru", "seqres") else None
        shape = shape_for_difficulty(self.kind if d is not None else None, d, gbs, s,
                                     self.shape.model)
        rows, seq = shape.rows, shape.seq_length
        kept = None if self.random_ltd is None else self.random_ltd.kept_length(iteration)
        plan = StepPlan(iteration=iteration, rows=rows, seq_length=seq, global_batch_size=gbs,
                        num_microbatches=self.shape.num_microbatches, transform=self.kind,
                        transform_difficulty=d, difficulties=difficulties,
                        kept_length=kept,
                        dropping_layers=(self.random_ltd.layer_ids if self.random_ltd
                                         else frozenset()),
                        num_layers=self.shape.num_layers, consumed_tokens=0,
                        ltd_seed=self.shape.seed, data_dependent=self.kind == "seqreo")
        return dataclasses.replace(plan, consumed_tokens=plan.tokens_for(rows, seq))

    def lr_rule(self, iteration: int) -> BatchLR | None:
        """The LR scaling of step ``iteration`` (``plan(iteration).lr_rule``, without
        planning the step): token-budget batches scale the LR to the step's samples."""
        if not self.config.dynamic_batching.enabled or self.token_batches is None:
            return None
        return self.step_batch(iteration).lr

    def _token_budget_plan(self, iteration: int) -> StepPlan:
        """The step's token-budget batch: its samples, real tokens, LR rule (and the
        curriculum's difficulties in force, when one chooses the samples)."""
        batch = self.step_batch(iteration)
        difficulties = (self.difficulties(iteration) if self.config.curriculum.enabled
                        else MappingProxyType({}))
        return StepPlan(iteration=iteration, rows=batch.samples, seq_length=batch.longest,
                        global_batch_size=batch.samples,
                        num_microbatches=self.shape.num_microbatches, transform=None,
                        transform_difficulty=None, difficulties=difficulties,
                        kept_length=None, dropping_layers=frozenset(),
                        num_layers=self.shape.num_layers, consumed_tokens=batch.tokens,
                        ltd_seed=self.shape.seed, step_batch=batch)

    def steps_for_tokens(self, train_tokens: int, limit: int = 100_000_000) -> int | None:
        """Steps needed to consume ``train_tokens`` (None: seqreo or token-budget
        batches, whose steps depend on the data). Pure: walks the plans, changes nothing."""
        if self.kind == "seqreo" or self.config.dynamic_batching.enabled:
            return None
        total, step = 0, 0
        while total < train_tokens and step < limit:
            total += self.plan(step).consumed_tokens
            step += 1
        return step


class CurriculumTransform:
    """The batch transform of a config (seqtru / seqres / seqreo) with its pacing.

    Args:
        config: the curriculum config.
        model: ``"gpt"`` or ``"bert"``.
    """

    def __init__(self, config: CurriculumConfig, model: str = "gpt"):
        self.kind = config.transform_for(model) if config.enabled else None
        metric = config.transform_metric if config.enabled else None
        self.name = metric.name if metric is not None else None
        self.scheduler = CurriculumScheduler(metric.schedule) if metric is not None else None
        self.model = model

    def difficulty(self, iteration: int) -> int | None:
        """Sequence length the transform allows at ``iteration`` (None: no transform);
        pure in the iteration."""
        if self.scheduler is None:
            return None
        return int(self.scheduler.difficulty_at(curriculum_step(iteration)))

    def apply(self, batch: dict, difficulty: int | None,
              dp_group: Any = None) -> tuple[dict, BatchShape]:
        """Transform one collated *training* micro-batch (never evaluation data) to the
        step's ``difficulty`` (the step plan's; seqreo measures the batch instead and
        agrees its length over ``dp_group``, None: local)."""
        if self.kind == "seqtru":
            return transforms.seqtru(batch, difficulty, self.model)
        if self.kind == "seqres":
            return transforms.seqres(batch, difficulty)
        if self.kind == "seqreo":
            return transforms.seqreo(batch, dp_group)
        text = batch["text"]
        seq = text.shape[1] - 1 if self.model == "gpt" else text.shape[1]
        return dict(batch), BatchShape(text.shape[0], seq)


def batch_mismatch(plan: StepPlan, shape: BatchShape, micro_batch_size: int) -> str | None:
    """Why a transformed training micro-batch does not match its plan (None: it does).

    Args:
        plan: the step's plan.
        shape: rows and input length the transform produced for one micro-batch.
        micro_batch_size: samples per micro-batch before the transform.
    """
    rows = micro_batch_size * plan.rows // plan.global_batch_size
    if plan.data_dependent:
        if shape.rows == rows and shape.seq_length <= plan.seq_length:
            return None
    elif (shape.rows, shape.seq_length) == (rows, plan.seq_length):
        return None
    return (f"iteration {plan.iteration + 1}: the feed produced a micro-batch of "
            f"{shape.rows} x {shape.seq_length} tokens, the step plan says {rows} x "
            f"{plan.seq_length}" + (" at most" if plan.data_dependent else ""))
