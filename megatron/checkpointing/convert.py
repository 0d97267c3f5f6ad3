"""Write a whole model as a checkpoint of any TP / PP / EP layout (the other half of
``whole_model.py``): the layout converter behind ``tools/checkpoint_util.py``, and the
writer of models imported from Hugging Face.

Model weights only: optimizer and RNG states are laid out per rank and are not written;
the LR scheduler state, the iteration and the counters of the source are kept. The
vocabulary is re-padded for the target TP (``whole_model.target_vocab_rows``) and the
record notes the new layout and ``orig_vocab_size``, so the result converts again.
Everything is checked before anything is created; the files go into ``iter_X.tmp``, which
is renamed into place before the tracker is written, and a failure removes what the call
created.
"""
from __future__ import annotations

import dataclasses
import os
import shutil

import torch

from megatron.checkpointing import model_split
from megatron.checkpointing.files import CKPT_NAME, checkpoint_dir, publish, rank_folder
from megatron.checkpointing.record import RECORD_KEY
from megatron.checkpointing.whole_model import (load_whole, num_experts, real_vocab_size,
                                                target_vocab_rows, template_specs)
from megatron.errors import BadConfigError
from megatron.run_config import RunConfig


def convert(load_dir: str, save_dir: str, target_tp: int, target_pp: int,
            iteration: int | None = None, true_vocab_size: int | None = None,
            target_ep: int | None = None, model_type: str | None = None) -> str:
    """Convert the checkpoint; returns the written iteration folder."""
    iteration, first, config, full = load_whole(load_dir, iteration, model_type)
    return save_layout(save_dir, iteration, first, config, full, target_tp, target_pp,
                       true_vocab_size, target_ep)


def save_layout(save_dir: str, iteration: int, first: dict, config: RunConfig,
                full: dict[str, torch.Tensor], target_tp: int, target_pp: int,
                true_vocab_size: int | None = None, target_ep: int | None = None) -> str:
    """Split a whole-model state dict into the target layout and write it (atomically:
    nothing is left behind on failure), recording ``config`` with the new layout."""
    model = config.model
    num_layers = model.num_layers
    if num_layers % target_pp != 0:
        raise BadConfigError(f"--target-pipeline-parallel-size {target_pp} does not divide "
                             f"--num-layers {num_layers}")
    heads = model.num_attention_heads
    if heads % target_tp != 0:
        raise BadConfigError(f"--target-tensor-parallel-size {target_tp} does not divide "
                             f"--num-attention-heads {heads}")
    groups = model.num_query_groups or heads
    if groups % target_tp != 0:
        raise BadConfigError(f"--target-tensor-parallel-size {target_tp} does not divide "
                             f"--num-query-groups {groups} (each rank holds whole query "
                             "groups)")
    specs = template_specs(config)
    rows = full[model_split.WORD_EMBEDDING_KEY].shape[0]
    new_rows = target_vocab_rows(config, rows, target_tp, true_vocab_size)
    model_split.resize_vocab(full, rows, new_rows)
    tied = not model.untie_embeddings_and_output_weights
    parts = model_split.split_state_dict(full, specs, target_tp, target_pp, num_layers, tied)
    target_ep = target_ep or config.parallel.expert_model_parallel_size
    config = relaid(config, target_tp, target_pp, target_ep, new_rows,
                    real_vocab_size(config, true_vocab_size))
    parts = _split_expert_ranks(parts, config, target_ep)
    return _write(save_dir, iteration, parts, first, config, target_pp)


def relaid(config: RunConfig, tp: int, pp: int, ep: int, padded_vocab_size: int,
           orig_vocab_size: int | None) -> RunConfig:
    """``config`` under another layout (no interleaving) and vocabulary padding."""
    model = config.model
    moe = None if model.moe is None else dataclasses.replace(model.moe,
                                                             expert_model_parallel_size=ep)
    return config.replace(
        parallel=dataclasses.replace(config.parallel, tensor_model_parallel_size=tp,
                                     pipeline_model_parallel_size=pp,
                                     num_layers_per_virtual_pipeline_stage=None,
                                     virtual_pipeline_model_parallel_size=None,
                                     expert_model_parallel_size=ep),
        model=dataclasses.replace(model, padded_vocab_size=padded_vocab_size,
                                  vocab_size=orig_vocab_size, moe=moe),
        tokenizer=dataclasses.replace(config.tokenizer, orig_vocab_size=orig_vocab_size))


def _split_expert_ranks(parts: dict, config: RunConfig, ep: int) -> dict[tuple, dict]:
    """``{(tp, pp): model}`` -> ``{(tp, pp, ep_rank): model}`` with local expert indices."""
    if ep == 1:
        return {(t, p, 0): model for (t, p), model in parts.items()}
    from megatron.model.moe.checkpoint import split_expert_parallel
    return {(t, p, r): model for (t, p), full in parts.items()
            for r, model in enumerate(split_expert_parallel(full, num_experts(config), ep))}


def _write(save_dir: str, iteration: int, parts: dict, first: dict, config: RunConfig,
           target_pp: int) -> str:
    """Write every rank's file into a temp folder, rename it, then update the tracker.

    Nothing is left behind on failure: the temp folder goes, and so does ``save_dir``
    when this call created it.
    """
    final = checkpoint_dir(save_dir, iteration)
    if os.path.exists(final):
        raise BadConfigError(f"{final} already exists; choose an empty --save-dir")
    created_root = not os.path.exists(save_dir)
    tmp = final + ".tmp"
    ep = config.parallel.expert_model_parallel_size
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        for (t, p, e), model in parts.items():
            name = rank_folder(t, p if target_pp > 1 else None, e if ep > 1 else None)
            os.makedirs(os.path.join(tmp, name))
            state = {"iteration": iteration,
                     "checkpoint_version": first.get("checkpoint_version"),
                     RECORD_KEY: config.to_dict(), "model": model, "optimizer": None,
                     "rng_state": None,
                     "opt_param_scheduler": first.get("opt_param_scheduler"),
                     "extra_state": first.get("extra_state")}
            torch.save(state, os.path.join(tmp, name, CKPT_NAME))
        publish(tmp, final, save_dir, iteration)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created_root:
            shutil.rmtree(save_dir, ignore_errors=True)
        raise
    return final
