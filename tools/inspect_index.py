"""Show what an analyzer metric rewards: its distribution and its easiest / hardest samples.

    python tools/inspect_index.py DIR/<metric> [--png hist.png] [--show 3]
        [--data-path PREFIX --tokenizer-type T (--tokenizer-model M | --vocab-file V
         [--merge-file F])] [--split S --seq-length L --seed N --train-samples K]

Prints the quantiles of the metric (values of real samples at those sorted positions) and
its mean over samples;
``--png`` writes a histogram (matplotlib). With ``--data-path`` it also prints the
``--show`` easiest and hardest samples, decoded with the tokenizer (token ids without one);
a sample-granularity index needs the training dataset flags it was built with. The index
must belong to the data (fingerprint).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron.data.indexed_dataset import MMapIndexedDataset  # noqa: E402
from megatron.data_efficiency.analyzer import prune, valuation  # noqa: E402
from megatron.data_efficiency.analyzer.index_io import MetricIndex, dataset_fingerprint  # noqa: E402
from megatron.errors import BadInputError, run_main  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("index", help="analyzer metric folder DIR/<metric>")
    p.add_argument("--png", help="write a histogram of the values to this PNG file")
    p.add_argument("--bins", type=int, default=60)
    p.add_argument("--show", type=int, default=3, help="easiest and hardest samples shown")
    p.add_argument("--max-chars", type=int, default=400, help="characters shown per sample")
    p.add_argument("--data-path", help="the token store the index was built on")
    p.add_argument("--tokenizer-type")
    p.add_argument("--tokenizer-model")
    p.add_argument("--vocab-file")
    p.add_argument("--merge-file")
    p.add_argument("--split", default="969,30,1")
    p.add_argument("--seq-length", type=int)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--train-samples", type=int)
    p.add_argument("--data-cache-path")
    args = p.parse_args(argv)
    if args.tokenizer_type and not args.data_path:
        p.error("--tokenizer-type needs --data-path (the samples to decode)")
    return args


def _sample_reader(args: argparse.Namespace):
    """(function id -> token ids, the data's fingerprint) for the index's granularity."""
    if prune.index_granularity(args.index) == "document":
        store = MMapIndexedDataset(args.data_path)
        doc_idx = store.doc_idx

        def tokens(i: int):
            first, last = int(doc_idx[i]), int(doc_idx[i + 1])
            return [int(t) for s in range(first, last) for t in store[s]]
        return tokens, dataset_fingerprint([args.data_path], "document")
    train, fp = prune.sample_dataset(args.data_path, args.index, args.split, args.seq_length,
                                     args.seed, args.train_samples, args.data_cache_path)
    return (lambda i: train[int(i)]["text"].tolist()), fp


def _decoder(args: argparse.Namespace):
    if not args.tokenizer_type:
        return lambda ids: " ".join(map(str, ids))
    from megatron.data.provenance import check_store
    from megatron.tokenizer import build_tokenizer
    from megatron.tokenizer.identity import tokenizer_identity
    tok = build_tokenizer(args.tokenizer_type, vocab_file=args.vocab_file,
                          merge_file=args.merge_file, tokenizer_model=args.tokenizer_model)
    check_store(args.data_path, tokenizer_identity(   # decoding with another one is garbage
        args.tokenizer_type, tok, vocab_file=args.vocab_file, merge_file=args.merge_file,
        tokenizer_model=args.tokenizer_model))
    return tok.detokenize


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reader, fingerprint = (None, None)
    if args.data_path:
        reader, fingerprint = _sample_reader(args)
    try:
        index = MetricIndex.open(args.index, fingerprint)
    except ValueError as err:
        raise BadInputError(str(err)) from err
    print(f"{index.metric}: {index.num_samples:,} samples, {len(index.values):,} distinct "
          f"values ({index.meta.get('granularity')} granularity, {index.meta.get('dtype')})")
    for q, v in valuation.quantiles(index):
        print(f"  q{q * 100:g}\t{v:.6g}")
    print(f"  mean\t{valuation.mean(index):.6g}")
    if args.png:
        valuation.histogram_png(index, args.png, args.bins)
        print(f"histogram -> {args.png}")
    if reader is None:
        return 0
    decode = _decoder(args)
    easy, hard = valuation.extremes(index, args.show)
    s2m = index.sample_to_metric
    for label, ids in (("easiest", easy), ("hardest", hard)):
        for rank, i in enumerate(ids):
            text = decode(reader(int(i)))
            cut = text if len(text) <= args.max_chars else text[:args.max_chars] + " [...]"
            print(f"--- {label} #{rank + 1}: sample {int(i)}, {index.metric} = "
                  f"{float(s2m[int(i)]):.6g}\n{cut}")
    return 0


if __name__ == "__main__":
    run_main(main)
