"""Convert a GPT or BERT checkpoint to another tensor/pipeline parallel layout.

    python tools/checkpoint_util.py --load-dir ckpt/tp2pp2 --save-dir ckpt/tp1pp1 \\
        --target-tensor-parallel-size 1 --target-pipeline-parallel-size 1

or to / from a Hugging Face ``transformers`` model directory (``megatron/hf/``; needs
requirements-eval.txt)::

    python tools/checkpoint_util.py --saver hf --load-dir ckpt/tp2pp2 --save-dir hf/model
    python tools/checkpoint_util.py --loader hf --load-dir hf/gpt2 --save-dir ckpt/gpt2 \\
        --target-tensor-parallel-size 2 --target-pipeline-parallel-size 1

Reads ``{load-dir}/iter_XXXXXXX/mp_rank_XX[_YYY]/model_optim_rng.pt`` as written by
training (the iteration in ``latest_checkpointed_iteration.txt``, or ``--iteration``),
merges every tensor-parallel weight along its ``partition_dim`` and the pipeline stages'
layers into one model, and splits it again for the target layout. The work is
``megatron/checkpointing/`` (``whole_model.py`` reads and merges, ``convert.py`` splits and
writes); this file is its command line.

Model weights only: the optimizer state, the (distributed optimizer) shards and the RNG
states are laid out per rank and are dropped (the tool says so when it finishes); the LR
scheduler state, the iteration and the consumed-samples/tokens counters are kept. Load
the result with ``--finetune`` (restart the counters) or with ``--no-load-optim
--no-load-rng`` (continue the schedule).

The vocabulary padding depends on TP (``--make-vocab-size-divisible-by`` x TP): padding
rows are trimmed or added (zeros) to fit the target, which needs the real vocabulary size:
``--true-vocab-size``, else the checkpoint's ``orig_vocab_size`` (saved by every training
run) / ``vocab_size`` args, else the rows are kept when they
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
import dataclasses
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))

from megatron.checkpointing.convert import convert, save_layout  # noqa: E402
from megatron.checkpointing.whole_model import (load_whole, template_specs,  # noqa: E402
                                                 with_model_type)
from megatron.errors import BadConfigError, run_main  # noqa: E402


def _hf_dispatch(a: argparse.Namespace) -> None:
    """--saver hf / --loader hf: the work lives in megatron/hf/ (needs requirements-eval.txt)."""
    if a.saver == "hf":
        from megatron.hf.convert import save_hf
        _, _, config, full = load_whole(a.load_dir, a.iteration, a.model_type)
        if a.true_vocab_size:
            config = config.replace(tokenizer=dataclasses.replace(
                config.tokenizer, orig_vocab_size=a.true_vocab_size))
        out, note = save_hf(full, config, a.save_dir)
        print(f" > wrote the transformers model {out}" + (f"; {note}" if note else ""),
              flush=True)
        return
    from megatron.hf.convert import load_hf, model_flags
    from megatron.hf.hf_dir import tokenizer_flags
    config, full = load_hf(a.load_dir, a.make_vocab_size_divisible_by or 128)
    config = with_model_type(config.replace(model_type=config.model_type or "gpt"),
                             a.model_type, a.load_dir)
    _check_tensors(full, template_specs(config), a.load_dir)
    tp, pp = a.target_tensor_parallel_size or 1, a.target_pipeline_parallel_size or 1
    out = save_layout(a.save_dir, 0, {"checkpoint_version": 3.0}, config, full, tp, pp)
    print(f" > wrote {out} (TP {tp}, PP {pp}, iteration 0); start from it with --finetune "
          f"--load {a.save_dir} " + " ".join(tokenizer_flags(config.tokenizer)
                                             + model_flags(config)), flush=True)


def _check_tensors(full: dict, specs: dict, where: str) -> None:
    """The imported tensors are exactly those of the model their flags build (its spec)."""
    missing, extra = sorted(set(specs) - set(full)), sorted(set(full) - set(specs))
    if missing or extra:
        raise BadConfigError(f"{where}: the tensors do not fit the model its config describes"
                             f" (missing {missing[:4]}, unexpected {extra[:4]})")


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
