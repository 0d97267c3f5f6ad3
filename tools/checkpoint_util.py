"""Convert a GPT or BERT checkpoint to another tensor/pipeline parallel layout.

    python tools/checkpoint_util.py --load-dir ckpt/tp2pp2 --save-dir ckpt/tp1pp1 \\
        --target-tensor-parallel-size 1 --target-pipeline-parallel-size 1

or to / from a Hugging Face ``transformers`` model directory (``megatron/hf/``; needs
requirements-eval.txt)::

    python tools/checkpoint_util.py --saver hf --load-dir ckpt/tp2pp2 --save-dir hf/model
    python tools/checkpoint_util.py --loader hf --load-dir hf/gpt2 --save-dir ckpt/gpt2 \\
        --target-tensor-parallel-size 2 --target-pipeline-parallel-size 1

Reads ``{load-dir}/iter_XXXXXXX/mp_rank_XX[_YYY]/model_optim_rng.pt`` as written by
``megatron/checkpointing.py`` (the iteration in ``latest_checkpointed_iteration.txt``, or
``--iteration``), merges every tensor-parallel weight along its ``partition_dim`` and the
pipeline stages' layers into one model, and splits it again for the target layout.

Model weights only: the optimizer state, the (distributed optimizer) shards and the RNG
states are laid out per rank and are dropped (the tool says so when it finishes); the LR
scheduler state, the iteration and the consumed-samples/tokens counters are kept. Load
the result with ``--finetune`` (restart the counters) or with ``--no-load-optim
--no-load-rng`` (continue the schedule).

The vocabulary padding depends on TP (``--make-vocab-size-divisible-by`` x TP): padding
rows are trimmed or added (zeros) to fit the target, which needs the real vocabulary size:
``--true-vocab-size``, else the checkpoint's ``orig_vocab_size`` (saved by every run of
``megatron/checkpointing.py``) / ``vocab_size`` args, else the rows are kept when they
already divide by the target TP. The converted checkpoint records ``orig_vocab_size``, so
it can be converted again. Padding ids take no part in the softmax (the model masks
them, see ``megatron/core/tensor_parallel/cross_entropy.py``), so a re-padded model
computes exactly the losses of the original.

The model type is the checkpoint's (``model_type``, recorded by every run since it was
added; an older checkpoint without it is GPT). ``--model-type GPT|BERT`` (Megatron's flag)
is checked against it, and names the type of an older BERT checkpoint that predates it.

Everything is checked before anything is created; the result is written into
``iter_XXXXXXX.tmp`` and renamed into place, and a failure removes what this run created
(the temp folder, and ``--save-dir`` itself when the tool made it).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from argparse import Namespace

import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))

from megatron.core.distributed import checkpoint_layout  # noqa: E402
from megatron.errors import (BadConfigError, CheckpointError, MissingInputError,  # noqa: E402
                             run_main)

_RANK_DIR = re.compile(r"^mp_rank_(\d{2})(?:_(\d{3}))?(?:_(\d{3}))?$")
TRACKER = "latest_checkpointed_iteration.txt"
CKPT_NAME = "model_optim_rng.pt"


def _iteration_dir(load_dir: str, iteration: int | None) -> tuple[int, str]:
    if iteration is None:
        tracker = os.path.join(load_dir, TRACKER)
        if not os.path.isfile(tracker):
            raise MissingInputError(f"{tracker} not found: is --load-dir a checkpoint folder?"
                                    " (or give --iteration)")
        text = open(tracker).read().strip()
        if not text.isdigit():
            raise CheckpointError(f"{tracker}: expected an iteration number, got {text!r}")
        iteration = int(text)
    path = os.path.join(load_dir, f"iter_{iteration:07d}")
    if not os.path.isdir(path):
        raise MissingInputError(f"{path} does not exist")
    return iteration, path


def read_layout(iter_dir: str) -> dict[tuple[int, int], dict]:
    """Load every ``mp_rank_*`` file of an iteration folder: ``{(tp, pp): checkpoint}``."""
    found = {}
    for name in sorted(os.listdir(iter_dir)):
        match = _RANK_DIR.match(name)
        if not match:
            continue
        path = os.path.join(iter_dir, name, CKPT_NAME)
        if not os.path.isfile(path):
            raise MissingInputError(f"{path} is missing")
        key = tuple(int(g) for g in match.groups() if g is not None)
        found[key] = _read_checkpoint_file(path)
        found[key]["_path"] = path
    if not found:
        raise MissingInputError(f"{iter_dir} holds no mp_rank_* folders")
    found = _merge_expert_ranks(found)
    tp, pp = 1 + max(t for t, _ in found), 1 + max(p for _, p in found)
    missing = [(t, p) for t in range(tp) for p in range(pp) if (t, p) not in found]
    if missing:
        raise CheckpointError(f"{iter_dir}: layout {tp}x{pp} is incomplete, missing "
                                f"(tp, pp) ranks {missing}")
    for ckpt in found.values():
        if "model" not in ckpt:
            raise CheckpointError(f"{ckpt['_path']}: no 'model' entry (interleaved checkpoints with "
                             "model0, model1, ... are not supported by this tool)")
    return found


def _read_checkpoint_file(path: str) -> dict:
    from megatron.checkpointing import read_checkpoint_file
    return read_checkpoint_file(path)
def _expert_parallel_size(args: dict) -> int:
    return int(args.get("expert_model_parallel_size") or 1)


def _merge_expert_ranks(found: dict[tuple, dict]) -> dict[tuple[int, int], dict]:
    """``{(tp[, pp][, ep]): ckpt}`` -> ``{(tp, pp): ckpt}``; the files of one (tp, pp)
    position's expert-parallel ranks (Megatron-LM's ``_EEE`` suffix) become one model with
    global expert ids."""
    from megatron.model.moe.checkpoint import merge_expert_parallel
    args = next(iter(found.values())).get("args") or {}
    ep = _expert_parallel_size(args)
    if ep == 1:
        return {(k[0], k[1] if len(k) > 1 else 0): v for k, v in found.items()}
    pp = int(args.get("pipeline_model_parallel_size") or 1)
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
                                               int(args["num_experts"][0]
                                                   if isinstance(args["num_experts"], list)
                                                   else args["num_experts"]))
        merged[pos] = first
    return merged


def read_args(load_dir: str, iteration: int | None = None) -> tuple[int, dict]:
    """(iteration, the saved args) of a checkpoint, read from one rank's file."""
    iteration, iter_dir = _iteration_dir(load_dir, iteration)
    names = sorted(n for n in os.listdir(iter_dir) if _RANK_DIR.match(n))
    if not names:
        raise MissingInputError(f"{iter_dir} holds no mp_rank_* folders")
    first = _read_checkpoint_file(os.path.join(iter_dir, names[0], CKPT_NAME))
    return iteration, dict(first.get("args") or {})


def template_specs(args: dict) -> dict[str, checkpoint_layout.ParamSpec]:
    """Split metadata of every parameter, read from a single-rank model of the same shape."""
    from megatron.arguments import transformer_config_from_args
    config = transformer_config_from_args(Namespace(**{**args, "use_cpu_initialization": True,
                                                       "sequence_parallel": False,
                                                       "expert_model_parallel_size": 1}))
    try:
        with torch.device("meta"):  # shapes and attributes only: no memory, no init cost
            model = _template_model(config, args)
    except (RuntimeError, NotImplementedError):
        model = _template_model(config, args)
    return checkpoint_layout.param_specs(model)


def _template_model(config, args: dict) -> torch.nn.Module:
    """GPT, or BERT for checkpoints of pretrain_bert.py (``model_type`` "bert")."""
    if args.get("model_type") not in (None, "gpt", "bert"):
        raise BadConfigError(f"the checkpoint holds a {args['model_type']!r} model; this tool "
                             "converts GPT and BERT pretraining checkpoints")
    if args.get("model_type") == "bert":
        from megatron.model.bert_model import BertModel
        binary = bool(args.get("bert_binary_head", True))
        return BertModel(config, num_tokentypes=2 if binary else 0, add_binary_head=binary)
    from megatron.model.gpt_model import GPTModel
    return GPTModel(config)


def real_vocab_size(args: dict, given: int | None) -> int | None:
    """The real (unpadded) vocabulary size: the flag, else what the checkpoint recorded."""
    return given or args.get("orig_vocab_size") or args.get("vocab_size")


def target_vocab_rows(args: dict, rows: int, target_tp: int, true_vocab: int | None) -> int:
    """Padded vocabulary rows for the target TP (see the module docstring)."""
    true_vocab = real_vocab_size(args, true_vocab)
    multiple = int(args.get("make_vocab_size_divisible_by") or 1) * target_tp
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


def convert(load_dir: str, save_dir: str, target_tp: int, target_pp: int,
            iteration: int | None = None, true_vocab_size: int | None = None,
            target_ep: int | None = None, model_type: str | None = None) -> str:
    """Convert the checkpoint; returns the written iteration folder."""
    iteration, first, args, full = load_whole(load_dir, iteration, model_type)
    return save_layout(save_dir, iteration, first, args, full, target_tp, target_pp,
                       true_vocab_size, target_ep)


def with_model_type(args: dict, given: str | None, where: str) -> dict:
    """``args`` with the model type (``gpt`` / ``bert``) that ``--model-type`` names,
    refused when it contradicts the type the checkpoint recorded."""
    if given is None:
        return args
    recorded = args.get("model_type")
    if recorded is not None and recorded != given.lower():
        raise BadConfigError(f"--model-type {given}: {where} holds a {recorded.upper()} model")
    return {**args, "model_type": given.lower()}


def load_whole(load_dir: str, iteration: int | None = None, model_type: str | None = None
               ) -> tuple[int, dict, dict, dict[str, torch.Tensor]]:
    """(iteration, rank (0, 0)'s checkpoint, its args, the merged whole-model state dict).
    ``model_type``: ``--model-type`` (checked against the checkpoint's)."""
    iteration, iter_dir = _iteration_dir(load_dir, iteration)
    source = read_layout(iter_dir)
    first = source[(0, 0)]
    args = dict(first.get("args") or {})
    if not args:
        raise CheckpointError(f"{first['_path']} has no saved args: cannot rebuild the model shape")
    args = with_model_type(args, model_type, first["_path"])
    full = checkpoint_layout.merge_state_dicts({k: v["model"] for k, v in source.items()},
                                               template_specs(args), int(args["num_layers"]))
    return iteration, first, args, full


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
    specs = template_specs(args)
    rows = full[checkpoint_layout.WORD_EMBEDDING_KEY].shape[0]
    new_rows = target_vocab_rows(args, rows, target_tp, true_vocab_size)
    checkpoint_layout.resize_vocab(full, rows, new_rows)
    tied = not args.get("untie_embeddings_and_output_weights", False)
    parts = checkpoint_layout.split_state_dict(full, specs, target_tp, target_pp,
                                               num_layers, tied)
    target_ep = target_ep or _expert_parallel_size(args)
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
    experts = args.get("num_experts")
    experts = int(experts[0] if isinstance(experts, list) else experts or 1)
    return {(t, p, r): model for (t, p), full in parts.items()
            for r, model in enumerate(split_expert_parallel(full, experts, ep))}


def _write(save_dir: str, iteration: int, parts: dict, first: dict, args: dict,
           target_pp: int) -> str:
    """Write every rank's file into a temp folder, rename it, then update the tracker.

    Nothing is left behind on failure: the temp folder goes, and so does ``save_dir``
    when this call created it.
    """
    final = os.path.join(save_dir, f"iter_{iteration:07d}")
    if os.path.exists(final):
        raise BadConfigError(f"{final} already exists; choose an empty --save-dir")
    created_root = not os.path.exists(save_dir)
    tmp = final + ".tmp"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        for (t, p, e), model in parts.items():
            name = f"mp_rank_{t:02d}" + (f"_{p:03d}" if target_pp > 1 else "")
            if args.get("expert_model_parallel_size", 1) > 1:
                name += f"_{e:03d}"
            os.makedirs(os.path.join(tmp, name))
            state = {"iteration": iteration,
                     "checkpoint_version": first.get("checkpoint_version"),
                     "args": args, "model": model, "optimizer": None, "rng_state": None,
                     "opt_param_scheduler": first.get("opt_param_scheduler"),
                     "extra_state": first.get("extra_state")}
            torch.save(state, os.path.join(tmp, name, CKPT_NAME))
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created_root:
            shutil.rmtree(save_dir, ignore_errors=True)
        raise
    tracker_tmp = os.path.join(save_dir, TRACKER + ".tmp")
    with open(tracker_tmp, "w") as f:
        f.write(str(iteration))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tracker_tmp, os.path.join(save_dir, TRACKER))
    return final


def _hf_dispatch(a: argparse.Namespace) -> None:
    """--saver hf / --loader hf: the work lives in megatron/hf/ (needs requirements-eval.txt)."""
    if a.saver == "hf":
        from megatron.hf.convert import save_hf
        _, _, args, full = load_whole(a.load_dir, a.iteration, a.model_type)
        if a.true_vocab_size:
            args["orig_vocab_size"] = a.true_vocab_size
        out, note = save_hf(full, args, a.save_dir)
        print(f" > wrote the transformers model {out}" + (f"; {note}" if note else ""),
              flush=True)
        return
    from megatron.hf.convert import load_hf
    from megatron.hf.hf_dir import tokenizer_flags
    args, full = load_hf(a.load_dir, a.make_vocab_size_divisible_by or 128)
    args = with_model_type({"model_type": "gpt", **args}, a.model_type, a.load_dir)
    tp, pp = a.target_tensor_parallel_size or 1, a.target_pipeline_parallel_size or 1
    out = save_layout(a.save_dir, 0, {"checkpoint_version": 3.0}, args, full, tp, pp)
    print(f" > wrote {out} (TP {tp}, PP {pp}, iteration 0); start from it with --finetune "
          f"--load {a.save_dir} " + " ".join(tokenizer_flags(args)), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-type", default=None, choices=["GPT", "BERT"],
                        help="checked against the checkpoint's recorded type (default: "
                             "the checkpoint's; an older checkpoint without one is GPT)")
    parser.add_argument("--loader", default="megatron", choices=["megatron", "hf"],
                        help="hf: --load-dir is a local transformers model directory")
    parser.add_argument("--saver", default="megatron", choices=["megatron", "hf"],
                        help="hf: write a transformers model directory to --save-dir")
    parser.add_argument("--load-dir", required=True)
    parser.add_argument("--save-dir", required=True)
    parser.add_argument("--target-tensor-parallel-size", type=int, default=None)
    parser.add_argument("--target-pipeline-parallel-size", type=int, default=None)
    parser.add_argument("--iteration", type=int, default=None,
                        help="iteration to convert (default: the tracker file's)")
    parser.add_argument("--target-expert-parallel-size", type=int, default=None,
                        help="MoE: expert-parallel ranks of the result (default: the source's)")
    parser.add_argument("--true-vocab-size", type=int, default=None,
                        help="real vocabulary size, to re-pad the embedding for the target TP")
    parser.add_argument("--make-vocab-size-divisible-by", type=int, default=None,
                        help="--loader hf: pad the vocabulary as the finetuning run will "
                             "(default 128, Megatron's)")
    a = parser.parse_args(argv)
    _check_main_args(parser, a)
    if "hf" in (a.loader, a.saver):
        _hf_dispatch(a)
        return
    out = convert(a.load_dir, a.save_dir, a.target_tensor_parallel_size,
                  a.target_pipeline_parallel_size, a.iteration, a.true_vocab_size,
                  a.target_expert_parallel_size, a.model_type)
    print(f" > wrote {out} (TP {a.target_tensor_parallel_size}, PP "
          f"{a.target_pipeline_parallel_size}); optimizer and RNG state dropped: load with "
          "--finetune, or --no-load-optim --no-load-rng", flush=True)


def _check_main_args(parser: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    if a.loader == "hf" and a.saver == "hf":
        parser.error("--loader hf with --saver hf: use transformers itself")
    layout = (a.target_tensor_parallel_size, a.target_pipeline_parallel_size)
    if a.saver == "hf" and layout != (None, None):
        parser.error("--saver hf writes one whole model: drop --target-*-parallel-size")
    if a.loader == "megatron" and a.saver == "megatron" and None in layout:
        parser.error("--target-tensor-parallel-size and --target-pipeline-parallel-size "
                     "are required")
    if a.make_vocab_size_divisible_by is not None and a.loader != "hf":
        parser.error("--make-vocab-size-divisible-by applies to --loader hf only")
    if a.loader == "hf" and (a.iteration is not None or a.true_vocab_size is not None):
        parser.error("--loader hf takes no --iteration / --true-vocab-size")
    for flag, value in (("--target-tensor-parallel-size", layout[0]),
                        ("--target-pipeline-parallel-size", layout[1])):
        if value is not None and value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    if os.path.abspath(a.load_dir) == os.path.abspath(a.save_dir):
        parser.error("--save-dir must differ from --load-dir")


if __name__ == "__main__":
    run_main(main)
