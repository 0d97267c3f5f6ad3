"""The training loop's one handle on data efficiency.

The loop calls every method here unconditionally, each step; it never asks which
curriculum or whether random-LTD is on. This class composes the parts:

* the curriculum sampler (which samples a step draws; analyzer index metrics such as voc),
* the curriculum batch transform (seqtru / seqres / seqreo: what the model sees),
* the random-LTD scheduler (which layers keep how many tokens),
* token accounting (``token_accounting.tokens_per_step``): the tokens a step consumed.

With none of them configured it is the plain behaviour: Megatron's sampler, full
sequences, every layer sees every token, ``global_batch_size * seq_length`` tokens a step.

Iterations are 0-based here (the step about to run); the curriculum's own 1-based step
numbering is converted in ``curriculum.build``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist

from megatron.data_efficiency.curriculum.build import (CurriculumTransform, build_sampler,
                                                       sampled_values_histogram, sampler_scalars)
from megatron.data_efficiency.curriculum.transforms import BatchShape
from megatron.data_efficiency.token_accounting import tokens_per_step
from megatron.errors import BadInputError


@dataclass(frozen=True)
class RunShape:
    """Sizes the runtime needs; built once from the flags."""
    global_batch_size: int
    seq_length: int
    num_layers: int
    seed: int = 1234
    model_type: str = "gpt"            # "gpt" | "bert": which batch transforms apply


@dataclass
class Parallelism:
    """Where this rank sits, for the DP share of samples and the random-LTD draw key."""
    dp_rank: int = 0
    dp_size: int = 1
    dp_group: Any = None
    pp_size: int = 1
    pp_group: Any = None


class DataEfficiencyRuntime:
    """Curriculum sampler + batch transform + random-LTD + token accounting.

    Args:
        shape: global sizes of the run.
        curriculum: a ``config.CurriculumConfig`` (None or disabled: no curriculum).
        random_ltd: a ``random_ltd.RandomLTDScheduler`` (None or disabled: no dropping).
        parallelism: this rank's DP / PP position and groups.
        index_fingerprint: ``fn(train_dataset) -> str``, the fingerprint the analyzer's
            index must carry for this run's training samples (None: not checked).
        index_hint: ``fn(train_dataset) -> str``, how to build a matching index (added to
            the error when the index does not match).
    """

    def __init__(self, shape: RunShape, curriculum=None, random_ltd=None,
                 parallelism: Parallelism | None = None,
                 index_fingerprint: Callable[[Any], str] | None = None,
                 index_hint: Callable[[Any], str] | None = None) -> None:
        self.shape = shape
        self.par = parallelism or Parallelism()
        self.curriculum = curriculum if curriculum is not None and curriculum.enabled else None
        self.transform = (CurriculumTransform(self.curriculum, shape.model_type, self.par.dp_group)
                          if self.curriculum is not None else None)
        if self.transform is not None and self.transform.kind is None:
            self.transform = None
        self.random_ltd = random_ltd if random_ltd is not None and random_ltd.enabled else None
        self.index_fingerprint = index_fingerprint
        self.index_hint = index_hint
        self.sampler = None
        self._sampler_state: dict | None = None
        self._observed: dict[int, list[BatchShape]] = {}   # seqreo: shapes seen this step
        self._last_seq_length = shape.seq_length
        self._check_pipeline()

    # -- what the step looks like --------------------------------------------------------
    @property
    def _data_dependent(self) -> bool:
        """seqreo's length depends on the batch, so it is measured, not scheduled."""
        return self.transform is not None and self.transform.kind == "seqreo"

    def _check_pipeline(self) -> None:
        if self.par.pp_size > 1 and self.transform is not None \
                and self.transform.kind in ("seqres", "seqreo"):
            raise ValueError(f"curriculum transform {self.transform.kind} changes the micro-batch "
                             "shape per batch, which pipeline stages cannot agree on without "
                             "reading data; use seqtru with --pipeline-model-parallel-size > 1")

    def _scheduled_shape(self, iteration: int) -> BatchShape:
        """Rows and length of the global batch at ``iteration`` from the schedule alone."""
        if self.transform is None or self._data_dependent:
            return BatchShape(self.shape.global_batch_size, self.shape.seq_length)
        return self.transform.shape_for_step(iteration, self.shape.global_batch_size,
                                             self.shape.seq_length)

    def seq_length_for_step(self, iteration: int) -> int:
        """Sequence length the model sees at step ``iteration`` (pipeline buffer shapes)."""
        return self._scheduled_shape(iteration).seq_length

    def _layer_tokens(self, iteration: int, rows: int, seq_length: int) -> int:
        if self.random_ltd is None:
            return tokens_per_step(rows, seq_length, self.shape.num_layers)
        return self.random_ltd.consumed_tokens(iteration, rows, seq_length)

    def tokens_for_step(self, iteration: int) -> int:
        """Tokens the optimizer step ``iteration`` (0-based) consumed, layer-weighted.

        Called after the step's micro-batches ran. The same number on every rank: from
        the schedule where it fixes the shapes, else (seqreo) from the shapes this rank
        saw, summed over DP and agreed over the pipeline stages.
        """
        if not self._data_dependent:
            s = self._scheduled_shape(iteration)
            return self._layer_tokens(iteration, s.rows, s.seq_length)
        local = sum(self._layer_tokens(iteration, s.rows, s.seq_length)
                    for s in self._observed.pop(iteration, []))
        self._observed = {k: v for k, v in self._observed.items() if k > iteration}
        return _agree_total(local, self.par)

    def steps_for_tokens(self, train_tokens: int, limit: int = 100_000_000) -> int | None:
        """Steps needed to consume ``train_tokens`` under the schedule (None: seqreo, whose
        steps depend on the data)."""
        if self._data_dependent:
            return None
        saved = self.state_dict()     # walking the schedule must not advance its state
        total, step = 0, 0
        while total < train_tokens and step < limit:
            total += self.tokens_for_step(step)
            step += 1
        self.load_state_dict(saved)
        return step

    # -- data ----------------------------------------------------------------------------
    def train_batch_sampler(self, dataset, consumed_samples: int, micro_batch_size: int,
                            dp_rank: int, dp_size: int):
        """The curriculum sampler over the analyzer's index, or None for the default
        ``MegatronPretrainingSampler`` starting at ``consumed_samples``."""
        del consumed_samples
        if self.curriculum is None or not self.curriculum.sampling_metrics:
            return None
        fingerprint = (self.index_fingerprint(dataset) if self.index_fingerprint is not None
                       else None)
        try:
            self.sampler = build_sampler(self.curriculum, self.shape.global_batch_size,
                                         micro_batch_size, dp_rank, dp_size, self.shape.seed,
                                         expected_fingerprint=fingerprint)
        except ValueError as err:
            if self.index_hint is None or "fingerprint" not in str(err):
                raise
            raise BadInputError(f"{err}\n{self.index_hint(dataset)}") from None
        if self.sampler is not None and self._sampler_state is not None:
            self.sampler.load_state_dict(self._sampler_state)
        return self.sampler

    def transform_batch(self, batch: dict, iteration: int) -> dict:
        """Apply the curriculum transform to a collated *training* micro-batch."""
        if self.transform is None:
            return batch
        batch, shape = self.transform.apply(batch, iteration)
        batch["seq_length"] = shape.seq_length
        self._last_seq_length = shape.seq_length
        if self._data_dependent:
            # rows of the whole DP group: every DP rank runs this micro-batch's length
            self._observed.setdefault(iteration, []).append(shape)
        return batch

    def token_drop_plan(self, iteration: int, microbatch: int, seq_length: int | None = None):
        """The random-LTD plan of one training micro-batch, or None (no dropping)."""
        if self.random_ltd is None:
            return None
        s = seq_length if seq_length is not None else self.seq_length_for_step(iteration)
        return self.random_ltd.plan_for(iteration, microbatch, s, self.par.dp_rank)

    # -- logging -------------------------------------------------------------------------
    def tensorboard_scalars(self, steps_done: int) -> dict[str, Any]:
        """Scalars (and histogram tensors) for the step just finished (``steps_done`` is
        the 1-based count of steps done, as the logger passes it)."""
        it = max(0, steps_done - 1)
        out: dict[str, Any] = {}
        if self.transform is not None:
            out.update(self.transform.tensorboard_scalars(it, self.shape.seq_length))
        out.update(sampler_scalars(self.sampler))
        out.update(sampled_values_histogram(self.sampler))
        actual = (self._last_seq_length if self._data_dependent
                  else self.seq_length_for_step(it))
        if self.transform is not None:
            out["seqlen/actual_seq_length"] = float(actual)
        if self.random_ltd is not None:
            out.update(self.random_ltd.tensorboard_scalars(it, actual))
        return out

    # -- checkpoint ----------------------------------------------------------------------
    def state_dict(self, steps_done: int | None = None) -> dict:
        """Small state; ``steps_done`` rewinds a sampler that a prefetching loader ran ahead."""
        state: dict = {}
        if self.transform is not None:
            state["curriculum_transform"] = self.transform.state_dict()
        if self.sampler is not None:
            state["curriculum_sampler"] = self.sampler.state_dict(steps_consumed=steps_done)
        elif self._sampler_state is not None:
            state["curriculum_sampler"] = self._sampler_state
        if self.random_ltd is not None:
            state["random_ltd"] = self.random_ltd.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        if self.transform is not None and "curriculum_transform" in state:
            self.transform.load_state_dict(state["curriculum_transform"])
        self._sampler_state = state.get("curriculum_sampler")
        if self.sampler is not None and self._sampler_state is not None:
            self.sampler.load_state_dict(self._sampler_state)
        if self.random_ltd is not None and "random_ltd" in state:
            self.random_ltd.load_state_dict(state["random_ltd"])


def _agree_total(local: int, par: Parallelism) -> int:
    """Sum over the data-parallel group, then the same value on every pipeline stage
    (stages without data saw nothing, so MAX picks the stages that did)."""
    if not dist.is_initialized() or (par.dp_size == 1 and par.pp_size == 1):
        return int(local)
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([local], dtype=torch.long, device=device)
    if par.dp_size > 1:
        dist.all_reduce(t, group=par.dp_group)
    if par.pp_size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=par.pp_group)
    return int(t.item())
