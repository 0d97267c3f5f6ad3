"""Load any checkpoint of this codebase into one model: read every rank file of an
iteration (any TP / PP / EP layout), merge them into one whole-model state dict, and build
the model its record describes (for one process, or this process's (tp, pp) part).

The record a checkpoint keeps of its model is its ``RunConfig`` (``record.py``, which
migrates older records); :func:`saved_model_config` is the one function that turns it
into the ``TransformerConfig`` of one process, so the converter, the evaluation tasks and
the analyzer's reference models all rebuild a model the same way. The model type is the
record's ``model_type`` (``gpt`` / ``bert``; a checkpoint older than the field is GPT).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch

from megatron.checkpointing import model_split
from megatron.checkpointing.dist_files import dist_problem, is_dist_folder
from megatron.checkpointing.dist_format import read_whole_model
from megatron.checkpointing.files import CKPT_NAME, checkpoint_dir, parse_rank_folder, \
    rank_folders, read_checkpoint_file
from megatron.checkpointing.folder import read_tracker
from megatron.checkpointing.record import saved_run_config
from megatron.core import parallel_state
from megatron.errors import BadConfigError, CheckpointError, MissingInputError
from megatron.model.config import TransformerConfig
from megatron.run_config import RunConfig


def iteration_dir(load_dir: str, iteration: int | None) -> tuple[int, str]:
    """``(iteration, its folder)``: ``iteration``, else the tracker's."""
    if iteration is None:
        iteration = read_tracker(load_dir)
        if iteration is None:
            raise MissingInputError(f"{os.path.join(load_dir, 'latest_checkpointed_iteration.txt')}"
                                    " not found: is --load-dir a checkpoint folder? (or give "
                                    "--iteration)")
    path = checkpoint_dir(load_dir, iteration)
    if not os.path.isdir(path):
        raise MissingInputError(f"{path} does not exist")
    return iteration, path


def read_layout(iter_dir: str) -> dict[tuple[int, int], dict]:
    """Load every rank file of an iteration folder: ``{(tp, pp): checkpoint}`` (the files
    of one position's expert-parallel ranks merged into one model)."""
    found = {}
    for name in rank_folders(iter_dir):
        path = os.path.join(iter_dir, name, CKPT_NAME)
        if not os.path.isfile(path):
            raise MissingInputError(f"{path} is missing")
        key = parse_rank_folder(name)
        found[key] = read_checkpoint_file(path)
        found[key]["_path"] = path
    if not found:
        raise MissingInputError(f"{iter_dir} holds no mp_rank_* folders")
    found = merge_expert_ranks(found)
    tp, pp = 1 + max(t for t, _ in found), 1 + max(p for _, p in found)
    missing = [(t, p) for t in range(tp) for p in range(pp) if (t, p) not in found]
    if missing:
        raise CheckpointError(f"{iter_dir}: layout {tp}x{pp} is incomplete, missing "
                              f"(tp, pp) ranks {missing}")
    for ckpt in found.values():
        if "model" not in ckpt:
            raise CheckpointError(f"{ckpt['_path']}: no 'model' entry (interleaved checkpoints "
                                  "with model0, model1, ... are not supported by this tool)")
    return found


def num_experts(config: RunConfig) -> int:
    """Experts per MoE layer of a checkpoint's model (1: dense)."""
    return 1 if config.model.moe is None else config.model.moe.num_experts


def merge_expert_ranks(found: dict[tuple, dict]) -> dict[tuple[int, int], dict]:
    """``{(tp[, pp][, ep]): ckpt}`` -> ``{(tp, pp): ckpt}``; the files of one (tp, pp)
    position's expert-parallel ranks (Megatron-LM's ``_EEE`` suffix) become one model with
    global expert ids."""
    from megatron.model.moe.checkpoint import merge_expert_parallel
    first = next(iter(found.values()))
    config = saved_run_config(first, first.get("_path", "a checkpoint file"))
    ep = 1 if config is None else config.parallel.expert_model_parallel_size
    if ep == 1:
        return {(k[0], k[1] if len(k) > 1 else 0): v for k, v in found.items()}
    pp = config.parallel.pipeline_model_parallel_size
    groups: dict[tuple[int, int], dict[int, dict]] = {}
    for key, ckpt in found.items():
        tp, stage, rank = (key[0], 0, key[1]) if pp == 1 else key
        groups.setdefault((tp, stage), {})[rank] = ckpt
    merged = {}
    for pos, by_rank in groups.items():
        if sorted(by_rank) != list(range(ep)):
            raise MissingInputError(f"(tp, pp) {pos}: expert-parallel ranks {sorted(by_rank)} "
                                    f"found, expected 0..{ep - 1}")
        first = dict(by_rank[0])
        first["model"] = merge_expert_parallel([by_rank[r]["model"] for r in range(ep)],
                                               num_experts(config))
        merged[pos] = first
    return merged


def read_run_config(load_dir: str, iteration: int | None = None
                    ) -> tuple[int, RunConfig | None]:
    """(iteration, the run it was saved by) of a checkpoint, read from one rank's file."""
    iteration, iter_dir = iteration_dir(load_dir, iteration)
    names = rank_folders(iter_dir)
    if not names:
        raise MissingInputError(f"{iter_dir} holds no mp_rank_* folders")
    path = os.path.join(iter_dir, names[0], CKPT_NAME)
    return iteration, saved_run_config(read_checkpoint_file(path), path)


def saved_model_config(config: RunConfig, **overrides) -> TransformerConfig:
    """The ``TransformerConfig`` of a checkpoint's model, built whole
    (``use_cpu_initialization``: the same weights under any layout), without sequence
    parallelism or expert parallelism (one process's view); ``overrides`` replace model
    fields (e.g. ``padded_vocab_size`` after re-padding)."""
    model = config.model
    moe = None if model.moe is None else dataclasses.replace(model.moe,
                                                             expert_model_parallel_size=1)
    return dataclasses.replace(model, use_cpu_initialization=True, sequence_parallel=False,
                               moe=moe, **overrides)


def saved_model(model_config: TransformerConfig, config: RunConfig, pre_process: bool = True,
                post_process: bool = True, parallel_output: bool = True) -> torch.nn.Module:
    """GPT, or BERT for checkpoints of pretrain_bert.py (``model_type`` "bert")."""
    if config.model_type not in (None, "gpt", "bert"):
        raise BadConfigError(f"the checkpoint holds a {config.model_type!r} model; this tool "
                             "converts GPT and BERT pretraining checkpoints")
    if config.model_type == "bert":
        from megatron.model.bert_model import BertModel
        binary = bool(config.extra.get("bert_binary_head", True))
        return BertModel(model_config, num_tokentypes=2 if binary else 0,
                         add_binary_head=binary,
                         parallel_output=parallel_output, pre_process=pre_process,
                         post_process=post_process)
    from megatron.model.gpt_model import GPTModel
    return GPTModel(model_config, pre_process=pre_process, post_process=post_process,
                    parallel_output=parallel_output)


def template_specs(config: RunConfig) -> dict[str, model_split.ParamSpec]:
    """Split metadata of every parameter, read from a single-rank model of the same shape."""
    model_config = saved_model_config(config)
    try:
        with torch.device("meta"):  # shapes and attributes only: no memory, no init cost
            model = saved_model(model_config, config)
    except (RuntimeError, NotImplementedError):
        model = saved_model(model_config, config)
    return model_split.param_specs(model)


def with_model_type(config: RunConfig, given: str | None, where: str) -> RunConfig:
    """``config`` with the model type (``gpt`` / ``bert``) that ``--model-type`` names,
    refused when it contradicts the type the checkpoint recorded."""
    if given is None:
        return config
    recorded = config.model_type
    if recorded is not None and recorded != given.lower():
        raise BadConfigError(f"--model-type {given}: {where} holds a {recorded.upper()} model")
    return config.replace(model_type=given.lower())


def load_whole(load_dir: str, iteration: int | None = None, model_type: str | None = None
               ) -> tuple[int, dict, RunConfig, dict[str, torch.Tensor]]:
    """(iteration, rank (0, 0)'s checkpoint, the run it was saved by, the merged
    whole-model state dict). ``model_type``: ``--model-type`` (checked against the
    checkpoint's)."""
    iteration, iter_dir = iteration_dir(load_dir, iteration)
    dist = is_dist_folder(iter_dir)
    source = None if dist else read_layout(iter_dir)
    first = _first_rank_file(iter_dir) if dist else source[(0, 0)]
    config = saved_run_config(first, first["_path"])
    if config is None or config.model is None:
        raise CheckpointError(f"{first['_path']} records no run (no saved args or run config): "
                              "cannot rebuild the model shape")
    config = with_model_type(config, model_type, first["_path"])
    if dist:   # global tensors: already whole
        return iteration, first, config, read_whole_model(iter_dir, template_specs(config))
    full = model_split.merge_state_dicts({k: v["model"] for k, v in source.items()},
                                         template_specs(config), config.model.num_layers)
    return iteration, first, config, full


def _first_rank_file(iter_dir: str) -> dict:
    """A ``torch_dist`` folder's first rank file (its record; the model is elsewhere)."""
    problem = dist_problem(iter_dir)
    if problem:
        raise CheckpointError(problem)
    names = rank_folders(iter_dir)
    if not names:
        raise MissingInputError(f"{iter_dir} holds no mp_rank_* folders")
    path = os.path.join(iter_dir, names[0], CKPT_NAME)
    return {**read_checkpoint_file(path), "_path": path}


def real_vocab_size(config: RunConfig, given: int | None) -> int | None:
    """The real (unpadded) vocabulary size: the flag, else what the checkpoint recorded."""
    return given or config.tokenizer.orig_vocab_size or config.tokenizer.vocab_size


def target_vocab_rows(config: RunConfig, rows: int, target_tp: int,
                      true_vocab: int | None) -> int:
    """Padded vocabulary rows for the target TP: the real vocabulary padded to a multiple
    of ``--make-vocab-size-divisible-by`` x TP, else the rows as they are when they split."""
    true_vocab = real_vocab_size(config, true_vocab)
    multiple = int(config.tokenizer.make_vocab_size_divisible_by or 1) * target_tp
    if true_vocab:
        if int(true_vocab) > rows:
            raise BadConfigError(f"the real vocabulary size {true_vocab} exceeds the checkpoint's "
                                 f"{rows} vocabulary rows: check --true-vocab-size")
        return -(-int(true_vocab) // multiple) * multiple
    if rows % target_tp == 0:
        return rows
    raise BadConfigError(f"the checkpoint's {rows} vocabulary rows do not split over "
                         f"{target_tp} tensor-parallel ranks and the real vocabulary size is "
                         "unknown: give --true-vocab-size")


def _global_specs(model: torch.nn.Module) -> dict[str, model_split.ParamSpec]:
    """This stage's split specs under whole-model names (global layer ids; the last
    stage's tied embedding copy splits like the first stage's table)."""
    specs = {}
    layers = model.transformer.layers
    for name, spec in model_split.param_specs(model).items():
        if name.startswith("transformer.layers."):
            local, rest = name[len("transformer.layers."):].split(".", 1)
            name = f"transformer.layers.{layers[int(local)].layer_id}.{rest}"
        if name == model_split.TIED_COPY_KEY:
            name = model_split.WORD_EMBEDDING_KEY
        specs[name] = spec
    return specs


def rank_state_dict(full: dict[str, torch.Tensor], model: torch.nn.Module, num_layers: int,
                    tied_embeddings: bool) -> dict[str, torch.Tensor]:
    """This process's (tp, pp) part of a whole-model state dict, under the stage-local names
    of ``model`` (this rank's stage)."""
    tp = parallel_state.get_tensor_model_parallel_world_size()
    pp = parallel_state.get_pipeline_model_parallel_world_size()
    parts = model_split.split_state_dict(full, _global_specs(model), tp, pp, num_layers,
                                         tied_embeddings)
    return parts[(parallel_state.get_tensor_model_parallel_rank(),
                  parallel_state.get_pipeline_model_parallel_rank())]


@dataclass
class LoadedModel:
    """A checkpoint's model, built and loaded for evaluation (:func:`load_model`)."""
    model: torch.nn.Module               # eval mode; this process's (tp, pp) part
    config: RunConfig                    # the run the checkpoint was saved by
    iteration: int
    state_dict: dict[str, torch.Tensor]  # the whole model's merged weights, as saved
    run_record: dict                     # extra_state["run_record"] ({}: an older checkpoint)
    load_dir: str


def load_model(load_dir: str, iteration: int | None = None, *,
               device: str | torch.device | None = None, parallel_output: bool = True,
               params_dtype: torch.dtype | None = None) -> LoadedModel:
    """Merge a checkpoint of any layout and build its model for this process: the whole
    model without model-parallel groups, else this rank's (tp, pp) part (the vocabulary
    re-padded when its rows do not split over this TP), in eval mode.

    Args:
        device: where the model goes (None: the accelerator, else the CPU).
        params_dtype: the weights' dtype (None: the run's).
    """
    from megatron.core.devices import accelerator_device
    iteration, first, config, full = load_whole(load_dir, iteration)
    tp = parallel_state.get_tensor_model_parallel_world_size()
    rows = full[model_split.WORD_EMBEDDING_KEY].shape[0]
    weights = full
    if rows % tp != 0:
        weights = dict(full)
        model_split.resize_vocab(weights, rows, target_vocab_rows(config, rows, tp, None))
    overrides = {"padded_vocab_size": weights[model_split.WORD_EMBEDDING_KEY].shape[0],
                 "hidden_dropout": 0.0, "attention_dropout": 0.0,
                 "recompute_granularity": None, "recompute_method": None,
                 "recompute_num_layers": None}
    if params_dtype is not None:
        overrides["params_dtype"] = params_dtype
    model = saved_model(saved_model_config(config, **overrides), config,
                        parallel_state.is_pipeline_first_stage(),
                        parallel_state.is_pipeline_last_stage(), parallel_output)
    model.load_state_dict(rank_state_dict(
        weights, model, config.model.num_layers,
        not config.model.untie_embeddings_and_output_weights), strict=True)
    model.to(accelerator_device() if device is None else device).eval()
    record = (first.get("extra_state") or {}).get("run_record") or {}
    return LoadedModel(model, config, iteration, full, record, os.path.abspath(load_dir))
