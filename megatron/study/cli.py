"""Command-line pieces shared by tools/data_efficiency_study.py and
tools/tune_data_efficiency.py: preset, data and Table 1 flags."""
from __future__ import annotations

import argparse
import os

from megatron.study.commands import DataSpec
from megatron.study.presets import PRESETS, Preset, get_preset, with_hyper


def split_extra(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the tool's own flags, the flags after ``--`` that go to every pretrain run)."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    i = argv.index("--")
    return argv[:i], argv[i + 1:]


def add_data_args(p: argparse.ArgumentParser) -> None:
    """The model, data and Table 1 flags the study and the tuner share."""
    p.add_argument("--preset", required=True,
                   choices=sorted({name for _, name in PRESETS}))
    p.add_argument("--model", default="gpt", choices=sorted({model for model, _ in PRESETS}),
                   help="llama: a GPT with the Llama layer (RMSNorm, grouped-query "
                        "attention, SwiGLU, rotary, no biases, untied); presets smoke, demo, "
                        "cpu")
    p.add_argument("--out", required=True, help="output folder (reused: finished runs skip)")
    g = p.add_argument_group("data (default: the default corpus, built under OUT/data)")
    g.add_argument("--data-path", help="token store prefix (GPT: _document, BERT: _sentence)")
    g.add_argument("--tokenizer-type")
    g.add_argument("--tokenizer-model")
    g.add_argument("--vocab-file")
    g.add_argument("--merge-file")
    g.add_argument("--data-cache-path", help="sample index cache (default: OUT/cache)")
    h = p.add_argument_group("Table 1 hyper-parameters (fractions; default: the paper's)")
    h.add_argument("--d-s-seqlen", type=float, help="seqtru/seqres start, fraction of seq length")
    h.add_argument("--d-s-percentile", type=float, help="voc/seqreo start, easiest percent")
    h.add_argument("--t-c", type=float, help="curriculum duration, fraction of baseline steps")
    h.add_argument("--r-s", type=float, help="random-LTD start length, fraction of seq length")
    h.add_argument("--t-r", type=float, help="random-LTD duration, fraction of baseline steps")


def data_spec(args: argparse.Namespace) -> DataSpec | None:
    """The user's token store, or None for the default corpus."""
    if args.data_path is None:
        return None
    tok = []
    for flag in ("tokenizer_type", "tokenizer_model", "vocab_file", "merge_file"):
        if getattr(args, flag) is not None:
            tok += ["--" + flag.replace("_", "-"), getattr(args, flag)]
    cache = args.data_cache_path or os.path.join(args.out, "cache")
    return DataSpec(args.data_path, tuple(tok), cache)


def preset_from_args(args: argparse.Namespace) -> Preset:
    preset = get_preset(args.preset, args.model)
    return with_hyper(preset, d_s_seqlen=args.d_s_seqlen, d_s_percentile=args.d_s_percentile,
                      t_c=args.t_c, r_s=args.r_s, t_r=args.t_r)
