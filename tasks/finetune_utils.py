"""finetune(): a pretrained BERT + a classification head, trained for ``--epochs`` with the
project's training step, scored on the validation files after every epoch.

As Megatron's ``tasks/finetune_utils.py``: the step is the pretraining step
(``megatron.training.train_step``: micro-batches through the TP/PP schedule, gradient
accumulation, the data-parallel gradient average, the optimizer and the LR schedule of
``--lr-decay-style`` / ``--lr-warmup-fraction`` over the run's steps), ``--eval-interval``
logs the validation loss over ``--eval-iters`` batches, every epoch ends with the scores of
each ``--valid-data`` file (``tasks/eval_utils.py``) and, with ``--save``, a checkpoint.
``--load`` of a finetuning checkpoint resumes exactly (the data order is a function of
``(seed, epoch, step)``, the RNG states and the scores so far are in the checkpoint).
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F

from megatron.checkpointing import (read_tracker, remove_stale_temp_dirs, save_checkpoint,
                                    unwrap_model)
from megatron.checkpointing import model_split
from megatron.checkpointing.whole_model import load_whole, rank_state_dict, read_run_config
from megatron.core import parallel_state
from megatron.core.enums import ModelType
from megatron.errors import BadConfigError, CheckpointError
from megatron.initialize import get_tokenizer, initialize_megatron
from megatron.model.classification import Classification
from megatron.optimizer import get_megatron_optimizer
from megatron.optimizer_param_scheduler import OptimizerParamScheduler, rebatched
from megatron.run_config import RunConfig
from megatron.data_efficiency.step_plan import StepPlanner
from megatron.run_plan import run_shape
from megatron.training import evaluate, train_step
from megatron.training_state import TrainState, load_for_run, print_rank_0
from megatron.training_setup import build_data_efficiency_runtime, build_model, training_logger
from megatron.core.devices import accelerator_device
from tasks import finetune_args as flags
from tasks.eval_utils import TaskMetric, evaluate_files, is_last_rank
from tasks.finetune_data import CyclingSplit, EpochBatchSampler, example_rows, train_iterator
from tasks.finetune_results import FinetuneResults

MODEL_TYPE = "bert_classification"   # recorded in the finetuning checkpoints


@dataclass(frozen=True)
class TaskSpec:
    """A downstream task: how its files are read and scored.

    Attributes:
        read: ``fn(path) -> examples`` of one training / validation file (or folder).
        dataset: ``fn(name, examples, tokenizer, seq_length) -> Dataset``.
        name_of: ``fn(path) -> name`` of a validation file in the metric lines.
        num_choices: multiple choice (RACE): rows per example.
    """
    num_classes: int
    metric: TaskMetric
    read: Callable
    dataset: Callable
    name_of: Callable[[str], str]
    num_choices: int | None = None

    @property
    def regression(self) -> bool:
        return self.metric.kind == "correlation"


def _device_batch(batch: dict) -> dict:
    """The micro-batch as model rows (``example_rows``) on the model's device."""
    dev = accelerator_device()
    batch = example_rows(batch)
    return {k: batch[k].to(dev, non_blocking=True)
            for k in ("text", "types", "padding_mask", "label")}


def _loss(labels: torch.Tensor, regression: bool, logits: torch.Tensor):
    """Cross entropy over the classes (MSE for a regression), fp32; logged as ``lm loss``
    (Megatron's name) with the batch's ``accuracy``."""
    if regression:
        loss = F.mse_loss(logits.float().view(-1), labels.float().view(-1))
        return loss, {"lm loss": loss.detach()}
    loss = F.cross_entropy(logits.float(), labels)
    accuracy = (logits.argmax(dim=-1) == labels).float().mean()
    return loss, {"lm loss": loss.detach(), "accuracy": accuracy.detach()}


def _predictions(regression: bool, logits: torch.Tensor):
    predictions = logits.float().view(-1) if regression else logits.argmax(dim=-1)
    return torch.zeros((), device=logits.device), {"predictions": predictions}


def forward_step(data_iterator, model, regression: bool = False, predict: bool = False):
    """One micro-batch: the model's logits (or this stage's hidden states) and the loss
    function (``predict``: one that returns the predictions instead)."""
    b = _device_batch(next(data_iterator))
    logits = model(b["text"], b["padding_mask"], tokentype_ids=b["types"])
    if predict:
        return logits, partial(_predictions, regression)
    return logits, partial(_loss, b["label"], regression)


def _read(spec: TaskSpec, paths: list[str]) -> list:
    examples = []
    for path in paths:
        found = spec.read(path)
        print_rank_0(f" > {path}: {len(found)} examples")
        examples += found
    return examples


def _prepare(specs: dict[str, TaskSpec], argv: list[str] | None):
    """Flags checked, training examples read, the run sized, Megatron initialised.

    Returns:
        (the run's config, spec, training examples, the pretrained checkpoint's iteration
        and merged state dict (None when resuming), whether ``--load`` resumes a finetuning
        run).
    """
    task = flags.task_flags(argv, tuple(specs))
    spec = specs[task.task]
    resume = bool(task.load) and read_tracker(task.load) is not None
    if resume:
        _check_resumable(task)
    iteration, saved = read_run_config(task.pretrained_checkpoint)
    if saved is None:
        raise CheckpointError(f"{task.pretrained_checkpoint} records no run (no saved args or "
                              "run config): cannot rebuild the model shape")
    train = _read(spec, list(task.train_data)) if task.epochs > 0 else []
    defaults = flags.checkpoint_defaults(saved)
    gbs = task.global_batch_size   # None: validate_args names the missing flag
    if gbs and task.epochs > 0 and len(train) < gbs:
        raise BadConfigError(f"--train-data holds {len(train)} examples, fewer than one "
                             f"global batch ({gbs})")
    defaults["train_iters"] = task.epochs * (len(train) // gbs) if gbs else 0
    config = initialize_megatron(flags.add_tasks_args, defaults, argv=argv)
    flags.check_against_checkpoint(config, saved, task.pretrained_checkpoint)
    de = config.data_efficiency
    if de.curriculum.enabled or de.random_ltd.enabled or de.dynamic_batching.enabled:
        raise BadConfigError("curriculum learning / random-LTD / dynamic_batching (a "
                             "data_efficiency section of --deepspeed_config) are not supported "
                             "in finetuning: a task's examples are not indexed by the analyzer")
    # merged after the groups exist (the merge builds a template model)
    full = None if resume else load_whole(task.pretrained_checkpoint, iteration)[3]
    return config, spec, train, (iteration, full), resume


def _check_resumable(task: flags.TaskFlags) -> None:
    """``--load`` must hold a finetuning run of the same task."""
    try:
        _, saved = read_run_config(task.load)
    except CheckpointError:
        return   # a damaged file: load_checkpoint reports it (or --ckpt-fallback)
    model_type = None if saved is None else saved.model_type
    if model_type != MODEL_TYPE:
        raise CheckpointError(f"--load {task.load} holds a {model_type or 'gpt'} "
                              "checkpoint, not a finetuning run: give a pretrained BERT as "
                              "--pretrained-checkpoint (--load resumes a finetuning run)")
    if saved.extra.get("task") != task.task:
        raise CheckpointError(f"--load {task.load} is a {saved.extra.get('task')} finetuning "
                              f"run, not {task.task}")


def load_pretrained(model: list[torch.nn.Module], full: dict[str, torch.Tensor],
                    config: RunConfig) -> None:
    """The pretrained BERT's encoder and pooler into this rank's part of the classifier
    (any source layout: ``full`` is the merged model); the head starts at random, and so
    do a pooler and a segment table the checkpoint lacks (``--bert-no-binary-head``)."""
    full = {k: v for k, v in full.items()
            if k.startswith(("embedding.", "transformer.", "pooler."))}
    rows = full[model_split.WORD_EMBEDDING_KEY].shape[0]
    model_split.resize_vocab(full, rows, config.model.padded_vocab_size)
    chunk = unwrap_model(model[0])
    part = rank_state_dict(full, chunk, config.model.num_layers, tied_embeddings=False)
    missing, unexpected = chunk.load_state_dict(part, strict=False)
    fresh = [k for k in missing if not k.startswith("classification_head.")]
    bad = unexpected + [k for k in fresh if not k.startswith(
        ("pooler.", "embedding.tokentype_embeddings."))]
    if bad:
        raise CheckpointError(f"--pretrained-checkpoint does not fit the classifier: {bad}")
    if fresh:
        print_rank_0(f" > WARNING: {', '.join(sorted(fresh))} not in the pretrained checkpoint "
                     "(pretrained with --bert-no-binary-head): initialised at random")


def _rows_config(config: RunConfig, spec: TaskSpec) -> RunConfig:
    """The batch sizes in model rows (a multiple-choice example is ``num_choices`` rows,
    as Megatron multiplies them), for the step, its schedule and the counters."""
    if spec.num_choices is None:
        return config
    c, train = spec.num_choices, config.training
    rows = dataclasses.replace(train, micro_batch_size=train.micro_batch_size * c,
                               global_batch_size=train.global_batch_size * c)
    return config.replace(training=rows, schedule=rebatched(
        config.schedule, rows.global_batch_size, rows.seq_length))


def _header(config: RunConfig, train, pretrained_iteration, valid) -> dict:
    """The run's fixed facts, at the top of the results file."""
    task, run = config.extra, config.training
    return {"task": task["task"], "pretrained_checkpoint": os.path.abspath(
                task["pretrained_checkpoint"]), "pretrained_iteration": pretrained_iteration,
            "seed": run.seed, "epochs": task["epochs"], "train_iters": run.train_iters,
            "iters_per_epoch": run.train_iters // max(1, task["epochs"]),
            "train_examples": len(train), "global_batch_size": run.global_batch_size,
            "micro_batch_size": run.micro_batch_size, "lr": config.optimizer.lr,
            "valid_data": {ds.name: len(ds) for ds in valid}}


def finetune(specs: dict[str, TaskSpec], argv: list[str] | None = None) -> dict | None:
    """Megatron's ``tasks/main.py`` run for one of ``specs`` (chosen by ``--task``).

    Returns:
        The results (as written to the results file) on the last rank, else None.
    """
    config, spec, train, (pre_iter, full), resume = _prepare(specs, argv)
    tokenizer = get_tokenizer()
    seq = config.training.seq_length
    try:
        _ = (tokenizer.cls, tokenizer.sep, tokenizer.pad)
    except (AttributeError, NotImplementedError):
        raise BadConfigError(f"--tokenizer-type {config.tokenizer.tokenizer_type}: finetuning "
                             "needs a BERT WordPiece tokenizer ([CLS], [SEP], [PAD])") from None
    valid = [spec.dataset(spec.name_of(p), _read(spec, [p]), tokenizer, seq)
             for p in config.extra["valid_data"]]
    rows = _rows_config(config, spec)
    model = build_model(lambda pre_process=True, post_process=True: Classification(
        config.model, spec.num_classes, 2, spec.num_choices,
        pre_process, post_process), config)
    if not resume:
        load_pretrained(model, full, config)
        del full
    optimizer = get_megatron_optimizer(model, config.optimizer)
    scheduler = OptimizerParamScheduler(
        optimizer, rows.schedule,
        override_on_load=config.checkpointing.override_opt_param_scheduler)
    results = FinetuneResults(_header(config, train, pre_iter, valid), spec.metric.main)
    state = TrainState()
    remove_stale_temp_dirs(config.checkpointing.save)   # iter_X.tmp of killed saves
    if resume:
        state, extra = load_for_run(model, optimizer, scheduler, config)
        results.load_state_dict(extra.get("finetune", {}))
    run = _Run(config, rows, spec, model, optimizer, scheduler, state, results, valid)
    if config.extra["epochs"] == 0:
        print_rank_0(" > evaluation only (--epochs 0)")
        run.score(epoch=-1)
    else:
        run.train(spec.dataset("training", train, tokenizer, seq))
    print_rank_0("done :-)")
    return results.to_dict() if is_last_rank() else None


class _Run:
    """The finetuning loop and its end-of-epoch work."""

    def __init__(self, config: RunConfig, rows: RunConfig, spec, model, optimizer, scheduler,
                 state, results, valid):
        self.config, self.rows, self.spec, self.model = config, rows, spec, model
        self.optimizer, self.scheduler, self.state = optimizer, scheduler, state
        self.results, self.valid = results, valid
        save = config.checkpointing.save
        self.results_file = config.extra["results_file"] or (
            os.path.join(save, "results.json") if save else None)
        self.step_func = partial(forward_step, regression=spec.regression)
        self.runtime = build_data_efficiency_runtime(    # plain: finetuning has no schedule
            StepPlanner(rows.data_efficiency, run_shape(rows, ModelType.encoder)))

    def score(self, epoch: int) -> None:
        """Score every validation file; keep and write the numbers."""
        metrics = evaluate_files(
            self.model, self.valid, self.spec.metric, epoch,
            partial(forward_step, regression=self.spec.regression, predict=True),
            self.config.training.seq_length,
            self.config.extra["eval_micro_batch_size"] or self.config.training.micro_batch_size,
            self.spec.num_choices or 1)
        self.results.add_evaluation(epoch, self.state.iteration, metrics)
        if self.results_file and is_last_rank():
            self.results.write(self.results_file)

    def save(self) -> None:
        a, s = self.config.checkpointing, self.state
        extra = {**s.extra_state(self.runtime), "finetune": self.results.state_dict()}
        save_checkpoint(s.iteration, self.model, self.optimizer, self.scheduler, extra,
                        save_dir=a.save, save_optim=not a.no_save_optim,
                        save_rng=not a.no_save_rng,
                        run_config=self.config.replace(model_type=MODEL_TYPE),
                        ckpt_format=a.ckpt_format)
        print_rank_0(f" > saved checkpoint at iteration {s.iteration} to {a.save}")

    def _valid_split(self) -> CyclingSplit | None:
        """The validation files as one split for the --eval-interval loss (None: off)."""
        evaluation, train = self.config.evaluation, self.config.training
        if not evaluation.eval_interval or evaluation.eval_iters == 0:
            return None
        split = CyclingSplit(torch.utils.data.ConcatDataset(self.valid), train.micro_batch_size,
                             train.global_batch_size, parallel_state.get_data_parallel_rank(),
                             parallel_state.get_data_parallel_world_size(),
                             self.config.data.num_workers)
        if split.full_batches == 0:
            raise BadConfigError(f"--valid-data holds fewer examples than one global batch "
                                 f"({train.global_batch_size}): the --eval-interval loss needs "
                                 "one; give --eval-iters 0")
        return split

    def train(self, train_ds) -> None:
        """Steps until ``--epochs`` are done (or ``--exit-interval``)."""
        a, state = self.config.training, self.state
        per_epoch = a.train_iters // self.config.extra["epochs"]
        sampler = EpochBatchSampler(len(train_ds), per_epoch, a.train_iters,
                                    a.global_batch_size, a.micro_batch_size,
                                    parallel_state.get_data_parallel_rank(),
                                    parallel_state.get_data_parallel_world_size(), a.seed,
                                    state.iteration)
        batches = train_iterator(train_ds, sampler, self.config.data.num_workers)
        valid = self._valid_split()
        logger = training_logger(self.config, a.train_iters)
        step_time = 0.0   # since the last log line, evaluations and saves excluded
        try:
            while state.iteration < a.train_iters:
                if state.iteration % per_epoch == 0 or state.iteration == sampler.first_iteration:
                    print_rank_0(f"working on epoch {state.iteration // per_epoch + 1} ...")
                start = time.time()
                stats = train_step(self.step_func, batches, self.model, self.optimizer,
                                   self.scheduler, self.runtime, state, self.rows)
                step_time += time.time() - start
                logger.record(stats, step_time)
                if state.iteration % logger.log_interval == 0:
                    step_time = 0.0
                if not self._after_step(state.iteration, per_epoch, valid, logger):
                    return
        finally:
            logger.close()

    def _after_step(self, it: int, per_epoch: int, valid, logger) -> bool:
        """Validation loss, end-of-epoch scores, checkpoints; False: stop (--exit-interval)."""
        a, state = self.config.checkpointing, self.state
        if valid is not None and it % self.config.evaluation.eval_interval == 0:
            losses = evaluate(self.step_func, valid, self.model, self.rows, iteration=it)
            logger.validation(it, state.consumed_samples, state.consumed_tokens, losses)
            self.results.add_validation(it, losses)
        epoch_end = it % per_epoch == 0
        if epoch_end:
            self.score(epoch=it // per_epoch - 1)
        saved = bool(a.save) and (epoch_end or bool(a.save_interval and it % a.save_interval == 0))
        if saved:
            self.save()
        exit_interval = self.config.training.exit_interval
        if exit_interval and it % exit_interval == 0:
            if a.save and not saved:
                self.save()
            print_rank_0(f" > exiting at iteration {it} (--exit-interval)")
            return False
        return True
