"""Save and load a training run's checkpoint: collective, atomic, exact resume.

Every rank writes into ``iter_XXXXXXX.tmp`` (names in ``files.py``); after a barrier rank
0 renames that folder to its final name and then replaces the tracker file, so a crash at
any point leaves the tracker pointing at a complete checkpoint. One file per (TP, PP[, EP])
rank holds the model, optimizer, LR scheduler, RNG states of every DP rank, and
``extra_state`` (iteration, consumed samples / tokens, the data-efficiency runtime state,
the run record). The saved ``run_config`` (``RunConfig.to_dict()``, ``record.py``)
carries the layout (TP, PP, virtual PP) and the vocabulary sizes (``orig_vocab_size``,
``padded_vocab_size``) that the layout converter (``whole_model.py`` / ``convert.py``)
needs to re-pad the vocabulary for another TP size.

A file that cannot be read is reported with its path and the reason
(:class:`megatron.errors.CheckpointError`). ``load_checkpoint(..., fallback=True)``
(``--ckpt-fallback``) then loads the newest earlier iteration that every rank can read;
without it the run stops and lists the iterations on disk that are complete. All ranks
agree on the outcome, so they load the same iteration or fail together.
"""
from __future__ import annotations

import contextlib
import os
import random
import shutil

import numpy as np
import torch
import torch.distributed as dist

from megatron.checkpointing import dist_format, dist_state
from megatron.checkpointing.dist_files import dist_problem, is_dist_folder
from megatron.checkpointing.dist_format import AsyncSaver
from megatron.checkpointing.files import (CKPT_NAME, TRACKER, atomic_save, checkpoint_dir,
                                          model_keys, optim_shard_file, publish, rank_folder,
                                          rank_folders, read_checkpoint_file)
from megatron.checkpointing.record import RECORD_KEY, saved_run_config
from megatron.checkpointing.folder import (describe_folder, describe_iterations,
                                           iteration_folders, loadable_iterations, read_tracker)
from megatron.core import parallel_state
from megatron.core.distributed import fsdp
from megatron.core.tensor_parallel.random import get_rng_tracker
from megatron.errors import CheckpointError, agreed_problems
from megatron.run_config import RunConfig

# The model fields that must match between the checkpoint and the run that loads it.
_ARCH_MODEL = ("num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size",
               "padded_vocab_size", "position_embedding_type", "swiglu",
               "untie_embeddings_and_output_weights", "normalization", "num_query_groups",
               "add_bias_linear")
_ARCH_LAYOUT = ("tensor_model_parallel_size", "pipeline_model_parallel_size",
                "virtual_pipeline_model_parallel_size", "expert_model_parallel_size")
# The ones a torch_dist checkpoint may differ in: it reshards (the padded vocabulary
# follows the tensor-parallel size).
_RESHARDED = ("tensor_model_parallel_size", "pipeline_model_parallel_size",
              "virtual_pipeline_model_parallel_size", "padded_vocab_size")
# The flag that sets a compared field, where the two names differ.
_FLAG_OF = {"add_bias_linear": "disable-bias-linear (add_bias_linear)",
            "moe_layers": "moe-layer-freq / --expert-interval (MoE layers)"}


def _dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def _barrier() -> None:
    if _dist():
        dist.barrier()


def _rank() -> int:
    return dist.get_rank() if _dist() else 0


def checkpoint_file(iter_dir: str) -> str:
    """This rank's file inside an iteration folder."""
    pp = (parallel_state.get_pipeline_model_parallel_rank()
          if parallel_state.get_pipeline_model_parallel_world_size() > 1 else None)
    ep = (parallel_state.get_expert_model_parallel_rank()
          if parallel_state.get_expert_model_parallel_world_size() > 1 else None)
    return os.path.join(iter_dir, rank_folder(parallel_state.get_tensor_model_parallel_rank(),
                                              pp, ep), CKPT_NAME)


def unwrap_model(module: torch.nn.Module) -> torch.nn.Module:
    """Strip wrappers (DDP, Float16Module) that keep the real model in ``.module``."""
    while isinstance(getattr(module, "module", None), torch.nn.Module):
        module = module.module
    return module


def model_state(chunk: torch.nn.Module) -> dict:
    """A model chunk's weights as the checkpoint stores them: whole per (TP, PP) rank. An
    FSDP2-sharded chunk is gathered (collective: every rank calls this)."""
    if fsdp.is_fully_sharded(chunk):
        return fsdp.full_model_state(chunk)
    return unwrap_model(chunk).state_dict()


def load_model_state(chunk: torch.nn.Module, state: dict) -> None:
    """Load :func:`model_state`'s dict (strict); an FSDP2 chunk keeps its shards."""
    if fsdp.is_fully_sharded(chunk):
        fsdp.load_full_model_state(chunk, state)
    else:
        unwrap_model(chunk).load_state_dict(state, strict=True)


def _rng_state() -> dict:
    state = {"random": random.getstate(), "np": np.random.get_state(),
             "torch": torch.get_rng_state(), "tracker": get_rng_tracker().get_states()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _gather_rng_over_dp() -> list[dict]:
    """RNG states of every DP rank (index = DP rank); only DP rank 0 writes them."""
    mine = _rng_state()
    if not _dist() or parallel_state.get_data_parallel_world_size() == 1:
        return [mine]
    states = [None] * parallel_state.get_data_parallel_world_size()
    dist.all_gather_object(states, mine, group=parallel_state.get_data_parallel_group())
    return states


def _set_rng_state(states: list[dict]) -> None:
    dp_rank = parallel_state.get_data_parallel_rank()
    state = states[dp_rank] if dp_rank < len(states) else states[0]
    random.setstate(state["random"])
    np.random.set_state(state["np"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    get_rng_tracker().set_states(state["tracker"])


def _arch(config: RunConfig) -> dict:
    """The fields of a run that a checkpoint's model and layout must match, by flag name."""
    model, layout, moe = config.model, config.parallel, config.model.moe
    fields = {name: getattr(model, name) for name in _ARCH_MODEL}
    fields.update({name: getattr(layout, name) for name in _ARCH_LAYOUT})
    fields["num_experts"] = None if moe is None else moe.num_experts
    fields["moe_layers"] = None if moe is None else sorted(moe.moe_layer_ids)
    return fields


def save_checkpoint(iteration: int, model_chunks: list[torch.nn.Module], optimizer,
                    opt_param_scheduler, extra_state: dict, *, save_dir: str,
                    save_optim: bool = True, save_rng: bool = True,
                    run_config: RunConfig | None = None, ckpt_format: str = "torch",
                    async_saver: AsyncSaver | None = None) -> str:
    """Write checkpoint ``iteration`` under ``save_dir`` (collective: every rank calls it),
    recording ``run_config`` (with its ``model_type``, ``gpt`` / ``bert``, for the
    converters).
    ``ckpt_format`` ``torch_dist`` writes the model and optimizer through
    ``torch.distributed.checkpoint`` (``dist_format.py``); with ``async_saver`` their
    write finishes in the background and the iteration is published when it is complete.

    Returns:
        The iteration folder (published, or to be published by ``async_saver``).
    """
    if async_saver is not None:
        async_saver.wait()            # at most one save in flight
    final_dir = checkpoint_dir(save_dir, iteration)
    tmp_dir = final_dir + ".tmp"
    if _rank() == 0:
        os.makedirs(save_dir, exist_ok=True)
        shutil.rmtree(tmp_dir, ignore_errors=True)   # leftovers of a crashed save
    _barrier()
    sharded = ckpt_format == dist_format.DIST_FORMAT
    optimizer = optimizer if save_optim else None
    # Collectives first, on every rank.
    if sharded:
        optim_state = None if optimizer is None else dist_state.optimizer_common(optimizer)
        tensors = dist_format.sharded_state([unwrap_model(m) for m in model_chunks], optimizer)
    else:
        optim_state = None if optimizer is None else optimizer.state_dict()
    rng_states = _gather_rng_over_dp() if save_rng else None
    model_states = {} if sharded else {key: model_state(m) for key, m
                                       in zip(model_keys(len(model_chunks)), model_chunks)}
    path = checkpoint_file(tmp_dir)
    dp_rank = parallel_state.get_data_parallel_rank()
    with _save_errors(save_dir, iteration):
        if sharded:
            os.makedirs(tmp_dir, exist_ok=True)
            if async_saver is None:
                dist_format.write(tensors, tmp_dir)
        elif getattr(optimizer, "sharded_state", False) and optim_state is not None:
            # ZeRO-1: every DP rank holds a different shard of the optimizer state.
            atomic_save(optim_state, optim_shard_file(path, dp_rank))
            optim_state = "sharded"
        # One file per expert-parallel rank (its experts differ); dense weights in each.
        if parallel_state.get_expert_data_parallel_rank() == 0:
            state = {"iteration": iteration, "checkpoint_version": 3.0,
                     RECORD_KEY: None if run_config is None else run_config.to_dict(),
                     "ckpt_format": ckpt_format,
                     "optimizer": optim_state, "rng_state": rng_states,
                     "opt_param_scheduler": (None if opt_param_scheduler is None
                                             else opt_param_scheduler.state_dict()),
                     "extra_state": extra_state}
            state.update(model_states)
            atomic_save(state, path)

    def publish_it() -> None:
        if _rank() == 0:
            with _save_errors(save_dir, iteration):
                publish(tmp_dir, final_dir, save_dir, iteration)

    if sharded and async_saver is not None:
        async_saver.start(tensors, tmp_dir, publish_it, f"iteration {iteration} to {save_dir}")
        return final_dir
    _barrier()
    publish_it()
    _barrier()
    return final_dir


class SaveError(CheckpointError):
    """Writing this rank's part of a checkpoint failed (disk full, I/O error)."""
    same_on_all_ranks = False


@contextlib.contextmanager
def _save_errors(save_dir: str, iteration: int):
    """An ``OSError`` while saving becomes a ``SaveError`` naming what stays trusted."""
    try:
        yield
    except OSError as err:
        last = read_tracker(save_dir)
        raise SaveError(f"saving iteration {iteration} to {save_dir} failed: {err}; nothing of "
                        f"it was published, the last complete checkpoint is "
                        f"{'none' if last is None else f'iteration {last}'}") from err


def _conversion_hint(load_dir: str) -> str:
    tp = parallel_state.get_tensor_model_parallel_world_size()
    pp = parallel_state.get_pipeline_model_parallel_world_size()
    return (f"convert it with python tools/checkpoint_util.py --load-dir {load_dir} "
            f"--save-dir NEW_DIR --target-tensor-parallel-size {tp} "
            f"--target-pipeline-parallel-size {pp}, then --load NEW_DIR")


def _layout_problem(load_dir: str, iteration: int) -> str | None:
    """This rank's file is missing but the iteration holds other rank folders: it was
    saved with another tensor / pipeline layout (a ``torch_dist`` one loads anyway)."""
    iter_dir = checkpoint_dir(load_dir, iteration)
    path = checkpoint_file(iter_dir)
    if os.path.isfile(path) or not os.path.isdir(iter_dir) or is_dist_folder(iter_dir):
        return None
    present = rank_folders(iter_dir)
    if not present:
        return None
    return (f"{iter_dir} was saved with another parallel layout (it holds "
            f"{', '.join(present)}; this rank needs {os.path.basename(os.path.dirname(path))}): "
            + _conversion_hint(load_dir))


def _check_run(state: dict, config: RunConfig | None, path: str, load_dir: str,
               reshards: bool = False) -> None:
    """Refuse a checkpoint whose model or layout differs from the run's, naming each flag."""
    saved_config = saved_run_config(state, path)
    if saved_config is None or saved_config.model is None or config is None:
        return
    saved, now = _arch(saved_config), _arch(config)
    bad = [k for k in saved if not (reshards and k in _RESHARDED) and saved[k] != now[k]]
    if bad:
        layout = any(k.endswith("parallel_size") for k in bad)
        raise CheckpointError(f"{path} was saved with a different model layout: "
                              + "; ".join(f"--{_FLAG_OF.get(k, k.replace('_', '-'))}: "
                                          f"checkpoint {saved[k]!r}, now {now[k]!r}"
                                          for k in bad)
                              + (f"; {_conversion_hint(load_dir)}" if layout else ""))


def _read_rank_file(iter_dir: str) -> tuple[str, dict]:
    """``(path, contents)`` of this rank's file; in a ``torch_dist`` folder (its DCP files
    checked first) saved under another layout, the first rank's file."""
    path = checkpoint_file(iter_dir)
    if is_dist_folder(iter_dir):
        problem = dist_problem(iter_dir)
        if problem:
            raise CheckpointError(problem)
        present = rank_folders(iter_dir)
        if not os.path.isfile(path) and present:
            path = os.path.join(iter_dir, present[0], CKPT_NAME)
    return path, read_checkpoint_file(path)


def _read_agreed(load_dir: str, iteration: int, fallback: bool,
                 load_sharded) -> tuple[int, str, dict]:
    """Read this rank's file of ``iteration`` (and load a ``torch_dist`` checkpoint's
    tensors: ``load_sharded(iter_dir, path, state) -> problem or None``), or with
    ``fallback`` of the newest earlier iteration that every rank can read. Raises
    CheckpointError naming the damaged file."""
    layout = agreed_problems(_layout_problem(load_dir, iteration))
    if layout:   # every iteration has it: no fallback helps
        raise CheckpointError(layout[0])
    candidates = [iteration]
    if fallback:   # rank 0's view of the folder, so every rank walks the same list
        candidates += sorted((i for i in loadable_iterations(load_dir) if i < iteration),
                             reverse=True)
        if _dist():
            box = [candidates]
            dist.broadcast_object_list(box, src=0)
            candidates = box[0]
    for n, it in enumerate(candidates):
        path, state, error = None, None, None
        try:
            path, state = _read_rank_file(checkpoint_dir(load_dir, it))
        except CheckpointError as err:
            error = f"iteration {it}: {err}"
        errors = agreed_problems(error)
        if not errors and state.get("ckpt_format") == dist_format.DIST_FORMAT:
            problem = load_sharded(checkpoint_dir(load_dir, it), path, state)
            errors = agreed_problems(problem and f"iteration {it}: {problem}")
        if not errors:
            return it, path, state
        if not fallback:
            older = [i for i in loadable_iterations(load_dir) if i < it]
            hint = (f"; rerun with --ckpt-fallback to resume from iteration {older[-1]}"
                    if older else "")
            raise CheckpointError(f"{errors[0]}; complete iterations in {load_dir}: "
                                  f"{describe_iterations(older)}{hint}")
        if _rank() == 0:
            print(f" > WARNING: {errors[0]}; --ckpt-fallback: "
                  + (f"trying iteration {candidates[n + 1]}" if n + 1 < len(candidates)
                     else "no earlier iteration left"), flush=True)
    raise CheckpointError(f"no iteration in {load_dir} can be read by every rank "
                          f"(tried {describe_iterations(candidates)})")


def load_checkpoint(model_chunks: list[torch.nn.Module], optimizer, opt_param_scheduler, *,
                    load_dir: str, load_optim: bool = True, load_rng: bool = True,
                    finetune: bool = False, run_config: RunConfig | None = None,
                    fallback: bool = False) -> tuple[int, dict]:
    """Load the latest checkpoint under ``load_dir`` into the given objects. Either
    format loads (it is recorded in the checkpoint); a ``torch_dist`` one under any layout.

    Args:
        run_config: the loading run's config; the checkpoint's model and layout must match
            it (None: not compared).
        fallback: when the tracker's iteration cannot be read, load the newest earlier
            one every rank can read (``--ckpt-fallback``) instead of raising.

    Returns:
        ``(iteration, extra_state)``; ``(0, {})`` when ``load_dir`` has no tracker file.
        With ``finetune`` only the model is loaded and the iteration is 0.
    """
    iteration = read_tracker(load_dir)
    if iteration is None and iteration_folders(load_dir):
        complete = loadable_iterations(load_dir)
        restore = (f"echo {complete[-1]} > {os.path.join(load_dir, TRACKER)} to resume from "
                   f"iteration {complete[-1]}" if complete else "nothing there is complete")
        raise CheckpointError(f"--load {load_dir}: the tracker file {TRACKER} is missing but "
                              f"the folder holds checkpoints ({describe_folder(load_dir)}); "
                              f"{restore}, or start from scratch without --load")
    if iteration is None:
        print(f" > no checkpoint tracker in {load_dir}; starting from scratch", flush=True)
        return 0, {}
    with_optim = load_optim and optimizer is not None and not finetune

    def load_sharded(iter_dir: str, path: str, state: dict) -> str | None:
        if any(fsdp.is_fully_sharded(m) for m in model_chunks):
            raise CheckpointError(f"{path} is a torch_dist checkpoint, which an FSDP2 run "
                                  "cannot load yet: convert it first (--ckpt-convert-format "
                                  "torch --ckpt-convert-save DIR, without FSDP2)")
        _check_run(state, run_config, path, load_dir, reshards=True)
        if with_optim and state.get("optimizer") is None:
            raise CheckpointError(f"{path} has no optimizer state; use --no-load-optim or "
                                  "--finetune")
        try:
            dist_format.load(iter_dir, [unwrap_model(m) for m in model_chunks], optimizer,
                             state["optimizer"] if with_optim else None)
        except CheckpointError as err:
            return str(err)
        return None

    iteration, path, state = _read_agreed(load_dir, iteration, fallback, load_sharded)
    if state.get("ckpt_format") == dist_format.DIST_FORMAT:
        same_layout = _saved_at_this_layout(state, path, checkpoint_dir(load_dir, iteration))
    else:
        _load_torch_format(state, path, model_chunks, optimizer if with_optim else None,
                           run_config, load_dir)
        same_layout = True
    if finetune:
        return 0, {}
    if load_optim and opt_param_scheduler is not None and state.get("opt_param_scheduler"):
        opt_param_scheduler.load_state_dict(state["opt_param_scheduler"])
    if load_rng and not same_layout:
        print(f" > {path}: saved under another tensor / pipeline layout; its RNG states "
              "are not loaded", flush=True)
    elif load_rng:
        if state.get("rng_state") is None:
            raise CheckpointError(f"{path} has no RNG state; use --no-load-rng")
        _set_rng_state(state["rng_state"])
    print(f" > loaded checkpoint {path} at iteration {iteration}", flush=True)
    return int(state["iteration"]), state.get("extra_state") or {}


def _saved_at_this_layout(state: dict, path: str, iter_dir: str) -> bool:
    """This rank's own file, written under this run's TP and PP sizes (its RNG states are
    this rank's)."""
    saved = saved_run_config(state, path)
    if saved is None:
        return path == checkpoint_file(iter_dir)
    return path == checkpoint_file(iter_dir) and (
        saved.parallel.tensor_model_parallel_size,
        saved.parallel.pipeline_model_parallel_size) == (
        parallel_state.get_tensor_model_parallel_world_size(),
        parallel_state.get_pipeline_model_parallel_world_size())


def _load_torch_format(state: dict, path: str, model_chunks: list[torch.nn.Module], optimizer,
                       run_config: RunConfig | None, load_dir: str) -> None:
    """The ``torch`` format's model and optimizer, from this rank's file (and shard)."""
    _check_run(state, run_config, path, load_dir)
    keys = model_keys(len(model_chunks))
    if any(key not in state for key in keys):
        held = sorted(k for k in state if k.startswith("model"))
        raise CheckpointError(f"{path} holds model entries {held} but this run has "
                              f"{len(model_chunks)} model chunk(s) (expects {keys}): load it "
                              "with the --num-layers-per-virtual-pipeline-stage it was saved "
                              "with")
    for key, chunk in zip(keys, model_chunks):
        load_model_state(chunk, state[key])
    if optimizer is None:
        return
    if state.get("optimizer") is None:
        raise CheckpointError(f"{path} has no optimizer state; use --no-load-optim or "
                              "--finetune")
    optim_state = state["optimizer"]
    if optim_state == "sharded":
        shard = optim_shard_file(path, parallel_state.get_data_parallel_rank())
        if not os.path.isfile(shard):
            raise CheckpointError(f"{shard} (distributed optimizer shard) is missing")
        optim_state = read_checkpoint_file(shard)
    optimizer.load_state_dict(optim_state)
