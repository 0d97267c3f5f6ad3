"""pretrain(): set up, train, evaluate, checkpoint.

The loop knows nothing about curriculum learning or random-LTD: every step it asks the
``DataEfficiencyRuntime`` for the step's ``StepPlan`` (one frozen value: shapes, kept
length, consumed tokens, TensorBoard scalars), runs the micro-batches through a feed that
applies and checks it, and hands the finished plan to the LR scheduler, the counters and
the logger. The run's length, stopping rule and step planner come from
``run_plan.plan_run``, once, from the run's ``RunConfig``; what is model-family specific
(how its samples are numbered for an analyzer index) comes from the entry point's
``data_family``.
"""
from __future__ import annotations

import time
from typing import Callable, Iterator

import torch
import torch.distributed as dist

from megatron import signal_handler
from megatron.checkpointing import remove_stale_temp_dirs
from megatron.checkpointing.dist_format import AsyncSaver
from megatron.core import parallel_state
from megatron.core.devices import collective_device
from megatron.core.distributed import fsdp
from megatron.core.distributed.errors import collective_context
from megatron.core.distributed.finalize_model_grads import finalize_model_grads
from megatron.core.pipeline_parallel.schedules import get_forward_backward_func
from megatron.core.timers import NO_TIMERS, Timers
from megatron.core.enums import ModelType
from megatron.data_efficiency.data_family import DataFamily, GPTSamples
from megatron.data_efficiency.runtime import DataEfficiencyRuntime, StepPlan
from megatron import metrics_file, preflight
from megatron.initialize import get_tokenizer, initialize_megatron
from megatron.model.moe.monitor import MoEMonitor
from megatron.optimizer import get_megatron_optimizer
from megatron.optimizer.state_stats import adam_state_norms
from megatron.optimizer_param_scheduler import OptimizerParamScheduler
from megatron.run_config import RunConfig
from megatron.run_plan import RunPlan, plan_run
from megatron.throughput import ModelFlops
from megatron.training_data import build_train_valid_test_data_iterators, microbatch_feeds
from megatron.training_log import StepStats, TrainingLogger
from megatron.training_state import (TrainState, convert_loaded, counters, load_for_run,
                                     print_rank_0, save_run)
from megatron.training_setup import (build_data_efficiency_runtime, build_model, model_flops,
                                     run_summary, training_logger, training_samples)


class TrainingDivergedError(RuntimeError):
    """The loss or the gradients became NaN/inf without fp16 loss scaling to absorb it."""


def _run_schedule(forward_step_func, feeds, model, config, forward_only, grad_scale_func,
                  seq_length, timers: Timers = NO_TIMERS) -> list[dict]:
    no_sync = None if forward_only else fsdp.no_sync(model)   # FSDP2: reduce once per step
    return get_forward_backward_func()(
        forward_step_func=forward_step_func, data_iterator=feeds[0] if len(feeds) == 1 else feeds,
        model=model, num_microbatches=config.training.num_microbatches, seq_length=seq_length,
        micro_batch_size=config.training.micro_batch_size, forward_only=forward_only,
        grad_scale_func=grad_scale_func, timers=timers,
        **({"no_sync_func": no_sync} if no_sync else {}))


def _reduce_losses(loss_dicts: list[dict]) -> dict[str, float]:
    """Mean over micro-batches and data-parallel ranks of each loss, with one all-reduce
    and one device-to-host copy for the whole step (not one per micro-batch)."""
    if not loss_dicts:
        return {}
    keys = list(loss_dicts[0])
    means = torch.stack([torch.stack([torch.as_tensor(d[k]).float().reshape(())
                                      for d in loss_dicts]).mean() for k in keys])  # [keys]
    if dist.is_initialized() and parallel_state.get_data_parallel_world_size() > 1:
        group = parallel_state.get_data_parallel_group()
        means = means.to(collective_device(group))
        dist.all_reduce(means, group=group)
        means = means / parallel_state.get_data_parallel_world_size()
    return dict(zip(keys, means.tolist()))


def _run_microbatches(train_iterator, runtime, plan: StepPlan, model, forward_step_func,
                      optimizer, config, timers: Timers = NO_TIMERS):
    """The step's micro-batches through the schedule (shapes from the plan), the gradient
    reductions and the optimizer step; returns the losses, the optimizer's outcome and
    the shapes the feeds produced. ``timers``: the level-1 phases (forward-backward,
    all-grads-sync, optimizer); nothing is timed, or synchronised, below that level."""
    feeds = microbatch_feeds(train_iterator, runtime, plan, config.training.seq_length,
                             config.training.micro_batch_size, len(model), timers)
    with timers.phase("forward-backward"):
        loss_dicts = _run_schedule(forward_step_func, feeds, model, config, False,
                                   optimizer.scale_loss, plan.seq_length, timers)
    with timers.phase("all-grads-sync"):   # DP, sequence-parallel and embedding reductions
        finalize_model_grads(model)
    with timers.phase("optimizer"):
        ok, grad_norm, _ = optimizer.step(timers)
    observed = [shape for feed in feeds for shape in feed.observed]
    return loss_dicts, ok, grad_norm, observed


def train_step(forward_step_func, train_iterator, model, optimizer, scheduler,
               runtime: DataEfficiencyRuntime, state: TrainState,
               config: RunConfig, moe_monitor: MoEMonitor | None = None,
               timers: Timers = NO_TIMERS, flops: ModelFlops | None = None) -> StepStats:
    """One optimizer step over ``num_microbatches`` micro-batches, driven by the step's
    ``StepPlan`` (computed once here; the feed, the schedule's shapes, the LR scheduler,
    the counters and the logger read it). ``timers`` times its phases (at the level they
    were built with); ``flops`` counts the model FLOPs of the plan's shapes for the
    throughput field (None: not reported).

    The collectives (schedule, gradient reductions, optimizer step) run inside
    ``collective_context``: a failure there, such as a peer rank that died, is raised as
    ``DistributedStepError("rank R: step N: ...")`` with N the logged iteration number.
    """
    it = state.iteration
    optimizer.zero_grad()
    plan = runtime.plan_step(it)
    if plan.lr_rule is not None:   # token-budget batches: this step's LR scaling
        scheduler.step(0, 0, 0, plan.lr_rule)
    moe_monitor = moe_monitor or MoEMonitor(model, None)
    moe_monitor.begin_step(optimizer.get_loss_scale(), config.training.num_microbatches)
    with collective_context(it + 1):
        loss_dicts, ok, grad_norm, observed = _run_microbatches(
            train_iterator, runtime, plan, model, forward_step_func, optimizer, config, timers)
        moe_monitor.end_step()
        plan = runtime.finish_step(plan, observed)
        losses = _reduce_losses(loss_dicts)
    losses.update(moe_monitor.scalars())
    if not ok and not config.optimizer.fp16:
        raise TrainingDivergedError(
            f"iteration {it + 1}: gradients are NaN/inf (grad norm {grad_norm}, losses {losses}); "
            "stopping. Lower --lr, use --clip-grad, or resume from the last checkpoint.")
    if not ok:
        print(f" > iteration {it + 1}: skipped, inf/nan gradients under fp16 (loss scale now "
              f"{optimizer.get_loss_scale():.1f})", flush=True)
    logging = config.logging
    if ok:   # the LR of the next step (scaled to its batch, as DeepSpeed's scheduler)
        scheduler.step(1, plan.global_batch_size, plan.consumed_tokens,
                       runtime.lr_rule(it + 1))
    state.iteration += 1
    state.consumed_samples += plan.global_batch_size
    state.consumed_tokens += plan.consumed_tokens
    if "lm loss" in losses:
        state.history.append((state.iteration, losses["lm loss"]))
    opt_states = (adam_state_norms(optimizer) if logging.log_optimizer_states_to_tensorboard
                  and state.iteration % logging.tensorboard_log_interval == 0 else {})
    return StepStats(iteration=state.iteration, consumed_samples=state.consumed_samples,
                     consumed_tokens=state.consumed_tokens, step_tokens=plan.consumed_tokens,
                     learning_rate=scheduler.get_lr(), batch_size=plan.global_batch_size,
                     loss_scale=optimizer.get_loss_scale(), grad_norm=grad_norm,
                     skipped=not ok, losses=losses, plan=plan.scalars(),
                     flops=None if flops is None else flops.plan_flops(plan),
                     extra_scalars={**plan.scalars(), **plan.sampled_values, **opt_states,
                                    **moe_monitor.histograms()})


def evaluate(forward_step_func, make_iterator: Callable[[], Iterator | None], model,
             config: RunConfig, iteration: int | None = None) -> dict[str, float]:
    """Mean loss over ``--eval-iters`` batches read from a fresh iterator (the same
    validation batches every time, so the curve is comparable across evaluations); with
    ``--eval-full``, over every complete global batch of the split (``make_iterator``'s
    ``full_batches``, agreed by all ranks).

    ``iteration`` (the training iteration evaluated) only labels errors: a failing
    collective raises ``DistributedStepError("rank R: step eval ...: ...")``.
    """
    for m in model:
        m.eval()
    iterator, loss_dicts = make_iterator(), []
    where = "" if iteration is None else f" at iteration {iteration}"
    evaluation, train = config.evaluation, config.training
    num_batches = make_iterator.full_batches if evaluation.eval_full else evaluation.eval_iters
    for i in range(num_batches):
        feeds = microbatch_feeds(iterator, None, None, train.seq_length, train.micro_batch_size,
                                 len(model))
        with collective_context(f"eval batch {i + 1}{where}"):
            loss_dicts += _run_schedule(forward_step_func, feeds, model, config, True, None,
                                        train.seq_length)
    with collective_context(f"eval losses{where}"):
        losses = _reduce_losses(loss_dicts)
    for m in model:
        m.train()
    return losses


def _eval_due(iteration: int, config: RunConfig, make_valid_iterator) -> bool:
    evaluation = config.evaluation
    return bool(make_valid_iterator is not None and evaluation.eval_iters > 0
                and evaluation.eval_interval and iteration % evaluation.eval_interval == 0)


def _training_done(state: TrainState, run: RunPlan) -> bool:
    """The run's stopping rule (``RunPlan.done``) at the state's counters."""
    return run.done(state.iteration, state.consumed_samples, state.consumed_tokens)


def _time_is_up(start: float, config: RunConfig) -> bool:
    """--exit-duration-in-mins, agreed by all ranks (MAX) so they stop together."""
    minutes = config.training.exit_duration_in_mins
    if minutes is None:
        return False
    flag = torch.tensor([float(time.time() - start > minutes * 60.0)],
                        device=collective_device())
    if dist.is_initialized():
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _early_exit_reason(iteration: int, start: float, config: RunConfig) -> str | None:
    """Why the run stops after this step (None: it goes on). Every rank calls it every
    step: the signal and time checks are collectives."""
    time_up, train = _time_is_up(start, config), config.training
    if signal_handler.exit_requested():
        return signal_handler.exit_reason()
    if train.exit_interval and iteration % train.exit_interval == 0:
        return f"--exit-interval {train.exit_interval}"
    if time_up:
        return f"--exit-duration-in-mins {train.exit_duration_in_mins:g} reached"
    return None


def train(forward_step_func, model, optimizer, scheduler, runtime, iterators, state: TrainState,
          config: RunConfig, logger: TrainingLogger, run: RunPlan,
          moe_monitor: MoEMonitor | None = None, flops: ModelFlops | None = None,
          saver: AsyncSaver | None = None) -> str | None:
    """The training loop: steps, logging, evaluation, checkpoints, exit rules. The phases
    are timed with ``logger.timers``; ``flops`` counts each step's model FLOPs; ``saver``:
    --async-save, a finished save is published after the step it ends in.

    Returns:
        None when the stopping rule was reached, else why the run stopped early
        (``--exit-interval`` / ``--exit-duration-in-mins`` / a signal).
    """
    train_iterator, make_valid_iterator = iterators[0], iterators[1]
    ckpt = config.checkpointing
    start = last_log = time.time()
    first_iteration = state.iteration
    for m in model:
        m.train()
    while not _training_done(state, run):
        stats = train_step(forward_step_func, train_iterator, model, optimizer, scheduler,
                           runtime, state, config, moe_monitor, logger.timers, flops)
        if saver is not None:
            saver.poll()
        now = time.time()
        logger.record(stats, now - last_log)
        if state.iteration % logger.log_interval == 0:
            last_log = time.time()
        it = state.iteration
        if _eval_due(it, config, make_valid_iterator):
            state.last_validation = evaluate(forward_step_func, make_valid_iterator, model, config,
                                             iteration=it)
            logger.validation(it, state.consumed_samples, state.consumed_tokens,
                              state.last_validation)
            last_log = time.time()   # evaluation time is not training time
        saved = False
        if ckpt.save and ckpt.save_interval and it % ckpt.save_interval == 0:
            save_run(state, runtime, model, optimizer, scheduler, config, logger, saver)
            saved = True
        reason = _early_exit_reason(it, start, config)
        if reason is not None:
            if ckpt.save and not saved:
                save_run(state, runtime, model, optimizer, scheduler, config, logger, saver)
            print_rank_0(f" > exiting at iteration {it}: {reason}")
            return reason
    saved_last = ckpt.save_interval and state.iteration % ckpt.save_interval == 0
    if ckpt.save and state.iteration > first_iteration and not saved_last:
        save_run(state, runtime, model, optimizer, scheduler, config, logger, saver)
    return None


def pretrain(train_valid_test_datasets_provider: Callable, model_provider: Callable,
             model_type: ModelType, forward_step_func: Callable,
             extra_args_provider: Callable | None = None, args_defaults: dict | None = None,
             argv: list[str] | None = None,
             data_family: Callable[[RunConfig], DataFamily] | None = None
             ) -> TrainState:
    """Megatron's entry point: initialise, build everything, load, train, evaluate.

    Args:
        train_valid_test_datasets_provider: ``fn([n_train, n_valid, n_test]) ->
            (train_ds, valid_ds, test_ds)``.
        model_provider: ``fn(pre_process, post_process) -> nn.Module``.
        model_type: ``ModelType.encoder_or_decoder`` (GPT) or ``ModelType.encoder``
            (BERT: every pipeline stage reads the batch, BERT curriculum transforms).
        forward_step_func: ``fn(data_iterator, model) -> (output, loss_func)``.
        extra_args_provider, args_defaults: see ``initialize_megatron``.
        argv: flags to parse instead of ``sys.argv[1:]``.
        data_family: ``fn(config) -> DataFamily``, how the model family numbers its
            training samples for a curriculum's analyzer index (``pretrain_bert.py``:
            ``BertSamples.from_config``; default: Megatron's GPTDataset numbering).

    Returns:
        The final ``TrainState`` (iteration, consumed counters, per-step losses, last
        validation losses).
    """
    config = initialize_megatron(extra_args_provider, args_defaults, argv=argv)
    record = preflight.check_inputs(config, get_tokenizer())
    family = (data_family or GPTSamples.from_config)(config)
    lock = preflight.claim_save_dir(config)
    try:
        return _build_and_train(config, record, train_valid_test_datasets_provider, model_provider,
                                model_type, forward_step_func, family)
    finally:
        if lock is not None:
            lock.release()


def _build_and_train(config: RunConfig, record: dict, train_valid_test_datasets_provider,
                     model_provider, model_type: ModelType, forward_step_func,
                     family: DataFamily) -> TrainState:
    """``pretrain()`` once the inputs are checked and the save folder is this run's; the
    metrics file gets the ``start`` line once the counters are loaded and an ``end`` line
    however the run stops."""
    run = plan_run(config, model_type)
    if run.train_iters != run.nominal_train_iters:
        print_rank_0(f" > --train-tokens {config.training.train_tokens}: {run.train_iters} "
                     f"steps under the data-efficiency schedule (nominal estimate was "
                     f"{run.nominal_train_iters})")
    logger = training_logger(config, run.train_iters)
    state = TrainState(run_record=record)
    try:
        model = build_model(model_provider, config)
        runtime = build_data_efficiency_runtime(run.planner, training_samples(config, run),
                                                family)
        optimizer = get_megatron_optimizer(model, config.optimizer)
        ckpt = config.checkpointing
        scheduler = OptimizerParamScheduler(optimizer, config.schedule,
                                            override_on_load=ckpt.override_opt_param_scheduler)
        de_state: dict = {}
        remove_stale_temp_dirs(ckpt.save)   # iter_X.tmp of killed saves (rank 0, before any save)
        if ckpt.load:
            state, extra = load_for_run(model, optimizer, scheduler, config)
            state.run_record = record
            de_state = preflight.resumed_data_efficiency_state(extra, record, config)
            if ckpt.ckpt_convert_format:
                convert_loaded(state, extra, model, optimizer, scheduler, config,
                                runtime.shape.model)
                return state
        logger.start(**counters(state), resumed=state.iteration > 0,
                     train_iters=run.train_iters,
                     config=run_summary(config, run, model_type, record))
        moe_monitor = MoEMonitor(model, config.model.moe)
        iterators = build_train_valid_test_data_iterators(
            train_valid_test_datasets_provider, config, runtime, run.train_valid_test_num_samples,
            every_stage=model_type is ModelType.encoder, consumed_samples=state.consumed_samples,
            iteration=state.iteration, data_efficiency_state=de_state,
            train_iters=run.train_iters)
        saver = AsyncSaver() if config.checkpointing.async_save else None
        stopped = _train_and_evaluate(forward_step_func, model, optimizer, scheduler, runtime,
                                      iterators, state, config, logger, run, moe_monitor, saver)
        if saver is not None:
            saver.wait()   # the run ends once its last checkpoint is written and published
        logger.end(**counters(state), exit="stopped" if stopped else "finished",
                   reason=stopped or "the stopping rule")
    except BaseException as err:
        logger.end(**counters(state), **metrics_file.exit_fields(err))
        raise
    finally:
        logger.close()
    return state


def _train_and_evaluate(forward_step_func, model, optimizer, scheduler, runtime, iterators,
                        state: TrainState, config: RunConfig, logger: TrainingLogger,
                        run: RunPlan, moe_monitor: MoEMonitor,
                        saver: AsyncSaver | None = None) -> str | None:
    """The loop, then (when it reached the stopping rule) the final validation, unless the
    last step evaluated, and the test split. Returns why the loop stopped early (None: it
    did not)."""
    signal_handler.install(config.training.exit_signal_handler)
    try:
        if _training_done(state, run):
            print_rank_0(f" > nothing to train: iteration {state.iteration} already meets the "
                         "stopping rule (--train-iters / --train-samples / --train-tokens); "
                         "evaluating only")
        else:
            print_rank_0(f" > training from iteration {state.iteration} (consumed samples "
                         f"{state.consumed_samples}, tokens {state.consumed_tokens})")
        first_iteration = state.iteration
        stopped = train(forward_step_func, model, optimizer, scheduler, runtime, iterators,
                        state, config, logger, run, moe_monitor,
                        model_flops(config, runtime.shape.model), saver)
        evaluated = (state.iteration > first_iteration   # the loop's last step evaluated
                     and _eval_due(state.iteration, config, iterators[1]))
        evaluates = not stopped and config.evaluation.eval_iters > 0
        if evaluates and iterators[1] is not None and not evaluated:
            state.last_validation = evaluate(forward_step_func, iterators[1], model, config,
                                             iteration=state.iteration)
            logger.validation(state.iteration, state.consumed_samples, state.consumed_tokens,
                              state.last_validation)
        if evaluates and iterators[2] is not None:
            test = evaluate(forward_step_func, iterators[2], model, config,
                            iteration=state.iteration)
            logger.validation(state.iteration, state.consumed_samples, state.consumed_tokens,
                              test, prefix="test")
    finally:
        signal_handler.uninstall()
    return stopped
