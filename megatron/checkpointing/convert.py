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

import os
import shutil

import torch

from megatron.checkpointing import model_split
from megatron.checkpointing.files import CKPT_NAME, checkpoint_dir, publish, rank_folder
from megatron.checkpointing.whole_model import (expert_parallel_size, load_whole, num_experts,
                                                real_vocab_size, target_vocab_rows,
                                                template_specs)
from megatron.errors import BadConfigError


def convert(load_dir: str, save_dir: str, target_tp: int, target_pp: int,
            iteration: int | None = None, true_vocab_size: int | None = None,
            target_ep: int | None = None, model_type: str | None = None) -> str:
    """Convert the checkpoint; returns the written iteration folder."""
    iteration, first, args, full = load_whole(load_dir, iteration, model_type)
    return save_layout(save_dir, iteration, first, args, full, target_tp, target_pp,
                       true_vocab_size, target_ep)


def save_layout(save_dir: str, iteration: int, first: dict, args: dict,
                full: dict[str, torch.Tensor], target_tp: int, target_pp: int,
                true_vocab_size: int | None = None, target_ep: int | None = None) -> str:
    """Split a whole-model state dict into the target layout and write it (atomically:
    nothing is left behind on failure)."""
    num_layers = int(args["num_layers"])
    if num_layers % target_pp != 0:
        raise BadConfigError(f"--target-pipeline-parallel-size {target_pp} does not divide "
                             f"--num-layers {num_layers}")
    heads = int(args["num_attention_heads"])
    if heads % target_tp != 0:
        raise BadConfigError(f"--target-tensor-parallel-size {target_tp} does not divide "
                             f"--num-attention-heads {heads}")
    groups = int(args.get("num_query_groups") or heads)
    if groups % target_tp != 0:
        raise BadConfigError(f"--target-tensor-parallel-size {target_tp} does not divide "
                             f"--num-query-groups {groups} (each rank holds whole query "
                             "groups)")
    specs = template_specs(args)
    rows = full[model_split.WORD_EMBEDDING_KEY].shape[0]
    new_rows = target_vocab_rows(args, rows, target_tp, true_vocab_size)
    model_split.resize_vocab(full, rows, new_rows)
    tied = not args.get("untie_embeddings_and_output_weights", False)
    parts = model_split.split_state_dict(full, specs, target_tp, target_pp, num_layers, tied)
    target_ep = target_ep or expert_parallel_size(args)
    args.update(tensor_model_parallel_size=target_tp, pipeline_model_parallel_size=target_pp,
                virtual_pipeline_model_parallel_size=None, padded_vocab_size=new_rows,
                orig_vocab_size=real_vocab_size(args, true_vocab_size),
                expert_model_parallel_size=target_ep)
    parts = _split_expert_ranks(parts, args, target_ep)
    return _write(save_dir, iteration, parts, first, args, target_pp)


def _split_expert_ranks(parts: dict, args: dict, ep: int) -> dict[tuple, dict]:
    """``{(tp, pp): model}`` -> ``{(tp, pp, ep_rank): model}`` with local expert indices."""
    if ep == 1:
        return {(t, p, 0): model for (t, p), model in parts.items()}
    from megatron.model.moe.checkpoint import split_expert_parallel
    return {(t, p, r): model for (t, p), full in parts.items()
            for r, model in enumerate(split_expert_parallel(full, num_experts(args), ep))}


def _write(save_dir: str, iteration: int, parts: dict, first: dict, args: dict,
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
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        for (t, p, e), model in parts.items():
            name = rank_folder(t, p if target_pp > 1 else None,
                               e if args.get("expert_model_parallel_size", 1) > 1 else None)
            os.makedirs(os.path.join(tmp, name))
            state = {"iteration": iteration,
                     "checkpoint_version": first.get("checkpoint_version"),
                     "args": args, "model": model, "optimizer": None, "rng_state": None,
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
