"""A training run's progress and its checkpoints: the counters (``TrainState``), and
saving, loading and converting them with the model, optimizer and LR scheduler as the
run's ``CheckpointConfig`` says (the format is ``megatron.checkpointing``'s)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch.distributed as dist

from megatron.checkpointing import load_checkpoint, save_checkpoint, save_dir_conflict
from megatron.checkpointing.dist_format import AsyncSaver
from megatron.core.timers import NO_TIMERS
from megatron.data_efficiency.runtime import DataEfficiencyRuntime
from megatron.errors import CheckpointError, raise_agreed
from megatron.run_config import RunConfig
from megatron.training_log import TrainingLogger


@dataclass
class TrainState:
    """Progress counters, saved in every checkpoint."""
    iteration: int = 0
    consumed_samples: int = 0
    consumed_tokens: int = 0
    history: list[tuple[int, float]] = field(default_factory=list)   # (iteration, lm loss)
    last_validation: dict[str, float] = field(default_factory=dict)
    run_record: dict = field(default_factory=dict)   # what the run trains with (run_record.py)

    def extra_state(self, runtime: DataEfficiencyRuntime) -> dict:
        return {"iteration": self.iteration, "consumed_samples": self.consumed_samples,
                "consumed_tokens": self.consumed_tokens,
                "data_efficiency": runtime.state_dict(self.iteration),
                "run_record": self.run_record}


def _is_rank_zero() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def print_rank_0(msg: str) -> None:
    if _is_rank_zero():
        print(msg, flush=True)


def counters(state: TrainState) -> dict:
    return {"iteration": state.iteration, "consumed_samples": state.consumed_samples,
            "consumed_tokens": state.consumed_tokens}


def save_run(state, runtime, model, optimizer, scheduler, config,
          logger: TrainingLogger | None = None, saver: AsyncSaver | None = None) -> None:
    """Save a checkpoint on every rank (``saver``: --async-save, the write goes on in the
    background); with a logger, time it (``save-checkpoint``, a level-0 timer as in
    Megatron: the save already waits for the device; under --async-save it times the
    staging only) and print the timer's report."""
    timers = NO_TIMERS if logger is None else logger.timers
    ckpt = config.checkpointing
    with timers.phase("save-checkpoint"):
        save_checkpoint(state.iteration, model, optimizer, scheduler, state.extra_state(runtime),
                        save_dir=ckpt.save, save_optim=not ckpt.no_save_optim,
                        save_rng=not ckpt.no_save_rng,
                        run_config=config.replace(model_type=runtime.shape.model),
                        ckpt_format=ckpt.ckpt_format, async_saver=saver)
    print_rank_0(f" > {'started saving' if saver else 'saved'} checkpoint at iteration "
                 f"{state.iteration} to {ckpt.save}")
    if logger is not None:
        logger.timer_report(["save-checkpoint"])


def convert_loaded(state, extra: dict, model, optimizer, scheduler, config,
                    model_type: str) -> None:
    """--ckpt-convert-format: save the checkpoint just loaded, its extra state as loaded,
    in that format into --ckpt-convert-save/FORMAT (Megatron-LM's place for it)."""
    ckpt = config.checkpointing
    if not extra:
        raise CheckpointError(f"--ckpt-convert-format: --load {ckpt.load} holds no checkpoint "
                              "to convert")
    target = os.path.join(ckpt.ckpt_convert_save, ckpt.ckpt_convert_format)
    raise_agreed(save_dir_conflict(target, resumes_from_it=False), CheckpointError)
    save_checkpoint(state.iteration, model, optimizer, scheduler, extra, save_dir=target,
                    save_optim=not ckpt.no_save_optim, save_rng=not ckpt.no_save_rng,
                    run_config=config.replace(model_type=model_type),
                    ckpt_format=ckpt.ckpt_convert_format)
    print_rank_0(f" > converted checkpoint: iteration {state.iteration} of {ckpt.load} saved "
                 f"as {ckpt.ckpt_convert_format} in {target}")


def load_for_run(model, optimizer, scheduler,
                 config: RunConfig) -> tuple[TrainState, dict]:
    """``--load`` into the model, optimizer, LR scheduler and RNGs as the flags say
    (``--finetune``: the model only, counters at 0; ``--no-load-optim``, ``--no-load-rng``,
    ``--ckpt-fallback``). Returns the restored counters and the checkpoint's extra state."""
    ckpt = config.checkpointing
    _, extra = load_checkpoint(model, optimizer, scheduler, load_dir=ckpt.load,
                               load_optim=not ckpt.no_load_optim,
                               load_rng=not ckpt.no_load_rng, finetune=ckpt.finetune,
                               run_config=config, fallback=ckpt.ckpt_fallback)
    if ckpt.finetune or ckpt.no_load_optim:
        optimizer.reload_model_params()   # fp32 masters from the weights just loaded
    state = TrainState(iteration=int(extra.get("iteration", 0)),
                       consumed_samples=int(extra.get("consumed_samples", 0)),
                       consumed_tokens=int(extra.get("consumed_tokens", 0)))
    return state, extra
