"""What ``pretrain()`` checks before it builds anything, so a run fails at start, not at
step 1 or at its first save.

* Inputs: every token store of ``--data-path`` / ``--train-data-path`` / ... exists, is
  readable and was made with this run's tokenizer (``megatron.data.provenance``);
  ``--load`` is a readable folder when it exists (a missing one starts from scratch).
* The save folder (``claim_save_dir``): created, locked for this run
  (``megatron.checkpointing.lock``), written to by every rank, and not holding another
  run's checkpoints unless ``--overwrite-checkpoints``.
* The run record of this run (``megatron.checkpointing.run_record``), returned for the
  checkpoints and compared on resume with the loaded checkpoint's
  (``resumed_data_efficiency_state``).

Every rank runs the same checks on the same files and raises the same error, printed once.
"""
from __future__ import annotations

import os
import tempfile

import torch.distributed as dist

from megatron.checkpointing.folder import save_dir_conflict
from megatron.checkpointing.lock import SaveDirLock, SaveDirLockedError
from megatron.checkpointing.run_record import (OVERRIDE_FLAGS, check_resume,
                                               data_efficiency_record, run_record)
from megatron.data.provenance import check_store, store_summary
from megatron.errors import BadConfigError, BadInputError, CheckpointError, raise_agreed
from megatron.run_config import RunConfig
from megatron.tokenizer.identity import NULL_TYPE, tokenizer_identity


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _print_rank_0(message: str) -> None:
    if _rank() == 0:
        print(message, flush=True)


def tokenizer_identity_of(config: RunConfig, tokenizer) -> dict:
    """The identity of the run's tokenizer (``NullTokenizer`` under ``--vocab-size``)."""
    from megatron.initialize import NullTokenizer
    flags = config.tokenizer
    kind = NULL_TYPE if isinstance(tokenizer, NullTokenizer) else flags.tokenizer_type
    return tokenizer_identity(kind, tokenizer, vocab_file=flags.vocab_file,
                              merge_file=flags.merge_file, tokenizer_model=flags.tokenizer_model,
                              vocab_extra_ids=flags.vocab_extra_ids)


def store_prefixes(config: RunConfig) -> dict[str, list[tuple[float, str]]]:
    """``{"all" | "train" | "valid" | "test": [(weight, prefix), ...]}`` of the run's data
    flags (one prefix has weight 1; a blend ``w1 p1 w2 p2 ...`` its weights)."""
    out = {}
    data = config.data
    for name, paths in (("all", data.data_path), ("train", data.train_data_path),
                        ("valid", data.valid_data_path), ("test", data.test_data_path)):
        if not paths:
            continue
        if len(paths) == 1:
            out[name] = [(1.0, paths[0])]
            continue
        try:
            out[name] = [(float(w), p) for w, p in zip(paths[0::2], paths[1::2])]
        except ValueError:
            raise BadInputError(f"--data-path {' '.join(paths)}: a blend is weight / prefix "
                                "pairs") from None
    return out


def idle_run_problem(config: RunConfig) -> str | None:
    """``pretrain()``'s refusal of a run that neither trains nor evaluates (a finetuning
    script with ``--epochs 0`` still scores its tasks, so this is not a flag rule)."""
    train = config.training
    given = [n for n in ("train_iters", "train_samples", "train_tokens")
             if getattr(train, n) is not None]
    if given and all(getattr(train, n) == 0 for n in given) \
            and config.evaluation.eval_iters == 0:
        flags = " / ".join("--" + n.replace("_", "-") for n in given)
        return (f"{flags} 0 trains nothing and --eval-iters 0 evaluates nothing: the run "
                "would do nothing")
    return None


def check_inputs(config: RunConfig, tokenizer) -> dict:
    """Check the data and ``--load`` (see the module docstring); returns this run's
    record (``megatron.checkpointing.run_record``)."""
    idle = idle_run_problem(config)
    if idle is not None:
        raise BadConfigError(idle)
    identity = tokenizer_identity_of(config, tokenizer)
    groups = store_prefixes(config)
    for prefix in sorted({p for pairs in groups.values() for _, p in pairs}):
        check_store(prefix, identity)
    load = config.checkpointing.load
    if load and os.path.exists(load) and not (
            os.path.isdir(load) and os.access(load, os.R_OK | os.X_OK)):
        raise CheckpointError(f"--load {load}: not a readable folder")
    data = {"split": config.data.split if config.data.data_path else None,
            "splits": {name: [[w, store_summary(p)] for w, p in pairs]
                       for name, pairs in groups.items()},
            "paths": {name: [os.path.abspath(p) for _, p in pairs]
                      for name, pairs in groups.items()}}
    train = config.training
    return run_record(data_efficiency=data_efficiency_record(config.data_efficiency, train.seed),
                      seq_length=train.seq_length, seed=train.seed, data=data, tokenizer=identity)


def _same_folder(a: str | None, b: str | None) -> bool:
    return bool(a and b) and os.path.realpath(a) == os.path.realpath(b)


def claim_save_dir(config: RunConfig) -> SaveDirLock | None:
    """Collective: make ``--save`` this run's (see the module docstring). Returns the
    lock on rank 0 (None elsewhere and without ``--save``); release it when the run ends.

    Raises:
        CheckpointError: on every rank, naming the folder and the problem (the holder of
            the lock, an unwritable folder, another run's checkpoints).
    """
    save = config.checkpointing.save
    if not save:
        return None
    lock, problem = None, None
    if _rank() == 0:
        lock, problem = _lock_on_rank_0(config)
    try:
        raise_agreed(problem, CheckpointError)
        raise_agreed(_write_test(save), CheckpointError)   # every rank, every node
    except CheckpointError:
        if lock is not None:
            lock.release()
        raise
    return lock


def _lock_on_rank_0(config: RunConfig) -> tuple[SaveDirLock | None, str | None]:
    save = config.checkpointing.save
    try:
        os.makedirs(save, exist_ok=True)
        lock = SaveDirLock(save).acquire()
    except SaveDirLockedError as err:
        return None, str(err)
    except OSError as err:
        return None, f"--save {save}: cannot create or write the folder ({err.strerror})"
    if lock.took_over:
        print(f" > {lock.path}: taking over the lock of an ended run ({lock.took_over})",
              flush=True)
    resumes = _same_folder(config.checkpointing.load, save) and not config.checkpointing.finetune
    conflict = save_dir_conflict(save, resumes)
    if conflict is not None and not config.checkpointing.overwrite_checkpoints:
        lock.release()
        return None, conflict
    if conflict is not None:
        print(f" > WARNING: --overwrite-checkpoints: {conflict.split('; its saves')[0]}; "
              "this run's saves replace iterations of the same number", flush=True)
    return lock, None


def _write_test(save: str) -> str | None:
    """This rank's problem writing into ``save`` (None: it can)."""
    try:
        with tempfile.NamedTemporaryFile(dir=save, prefix=".write_test_"):
            pass
    except OSError as err:
        return f"--save {save}: not writable ({err.strerror})"
    return None


def resumed_data_efficiency_state(extra: dict, record: dict,
                                   config: RunConfig) -> dict:
    """The checkpoint's data-efficiency state to restore, once its run record is checked
    against this run's (refused unless overridden; the curriculum sampler's streams start
    afresh when the flags accepted a change)."""
    de_state, ckpt = extra.get("data_efficiency", {}), config.checkpointing
    if ckpt.finetune or not extra:   # nothing loaded, or fresh counters
        return de_state
    overrides = {flag for flag, given in (
        (OVERRIDE_FLAGS["data_efficiency"], ckpt.override_data_efficiency_state),
        (OVERRIDE_FLAGS["data"], ckpt.override_training_data)) if given}
    lines, changed = check_resume(extra.get("run_record"), record, overrides,
                                  f"--load {ckpt.load}")
    for line in lines:
        _print_rank_0(f" > {line}")
    if changed and "curriculum_sampler" in de_state:
        _print_rank_0(" > the curriculum sampler starts its streams afresh at the resumed "
                      "iteration")
        de_state = {k: v for k, v in de_state.items() if k != "curriculum_sampler"}
    if changed and "token_batches" in de_state:
        _print_rank_0(" > dynamic batching: the new packing's batches from the resumed "
                      "iteration on")
        de_state = {k: v for k, v in de_state.items() if k != "token_batches"}
    return de_state
