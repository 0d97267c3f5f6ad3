"""Convert DeepSpeed DataAnalyzer indexes into this project's analyzer index, once.

    python tools/convert_deepspeed_index.py SAVE/vocab_rarity/vocab_rarity OUT_DIR --num-samples N
    python tools/convert_deepspeed_index.py SAVE/seqlen SAVE/vocab_rarity OUT_DIR \\
        --data-path PREFIX --split 949,50,1 --seq-length 2048 --seed 1234 --train-samples S

Each input names one DeepSpeed metric index: its ``<m>_index_to_sample`` /
``<m>_index_to_metric`` prefix, the common prefix ``SAVE/<m>/<m>``, or the folder
``SAVE/<m>``. The output is ``OUT_DIR/<m>/`` (``--names`` renames them), the CSR layout
of ``megatron/data_efficiency/analyzer/index_io.py``.

DeepSpeed indexes carry no fingerprint, so the sample count is checked instead:
``--num-samples N`` refuses an index that does not describe exactly N samples; the
dataset flags (those of a sample-granularity analyzer run, ``--model bert`` for BERT) build the training set,
check its count and stamp its fingerprint into the output, so training accepts it as an
index made by ``tools/analyze_data.py`` for that dataset. Without either, the output has
no fingerprint and training must check the count itself.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron.data_efficiency.analyzer import deepspeed_index as dsi  # noqa: E402
from megatron.data_efficiency.analyzer.cli_args import add_training_set_args  # noqa: E402
from megatron.data_efficiency.analyzer.index_io import check_sample_count  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("inputs", nargs="+", metavar="IN_PREFIX", help="DeepSpeed metric index(es)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output analyzer folder")
    p.add_argument("--names", nargs="+", help="output metric names, one per input")
    p.add_argument("--num-samples", type=int, help="refuse indexes not over exactly this many samples")
    p.add_argument("--data-path", help="token store prefix of the training set (with the flags below)")
    add_training_set_args(p)
    args = p.parse_args(argv)
    if args.names and len(args.names) != len(args.inputs):
        p.error(f"--names: {len(args.names)} names for {len(args.inputs)} inputs")
    if args.data_path and (not args.seq_length or not args.train_samples):
        p.error("--data-path needs --seq-length and --train-samples (the training set's flags)")
    return args


def training_set_identity(args: argparse.Namespace) -> tuple[int | None, str | None]:
    """(sample count, fingerprint) of the training set the dataset flags describe, if given."""
    if not args.data_path:
        return args.num_samples, None
    from megatron.data_efficiency.analyzer.analyzer import (AnalyzerConfig, build_source,
                                                            fingerprint_of)
    cfg = AnalyzerConfig(data_prefix=args.data_path, save_path=args.out_dir, granularity="sample",
                         split=args.split, seq_length=args.seq_length, seed=args.seed,
                         train_samples=args.train_samples, cache_dir=args.data_cache_path)
    if args.model == "bert":
        from megatron.data_efficiency.analyzer.bert_samples import (BertSampleParams,
                                                                    bert_samples_fingerprint,
                                                                    build_bert_source)
        src = build_bert_source(cfg, BertSampleParams(args.short_seq_prob, args.bert_binary_head))
        count = len(src.mapping)
        fingerprint = bert_samples_fingerprint(args.data_path, args.split, args.seq_length,
                                               args.seed, src.mapping)
    else:
        source = build_source(cfg)
        count, fingerprint = len(source.shuffle_idx), fingerprint_of(cfg, source)
    if args.num_samples is not None:
        check_sample_count(args.num_samples, count, f"--num-samples vs --data-path {args.data_path}")
    return count, fingerprint


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = args.names or [None] * len(args.inputs)
    paths = [dsi.resolve_paths(arg, name) for arg, name in zip(args.inputs, names)]
    if len({p.name for p in paths}) != len(paths):
        sys.exit(f"convert_deepspeed_index: two inputs have the metric name "
                 f"{[p.name for p in paths]}; give --names")
    count, fingerprint = training_set_identity(args)
    os.makedirs(args.out_dir, exist_ok=True)
    for p in paths:
        out = os.path.join(args.out_dir, p.name)
        try:
            index = dsi.convert_deepspeed_index(p, out, count, fingerprint)
        except ValueError as err:
            sys.exit(f"convert_deepspeed_index: {err}")
        print(f"{p.index_to_sample} -> {out}: {index.num_samples} samples, "
              f"{len(index.values)} values {index.values[0] if len(index.values) else '-'}.."
              f"{index.values[-1] if len(index.values) else '-'}"
              + (f", fingerprint {fingerprint}" if fingerprint else ", no fingerprint"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
