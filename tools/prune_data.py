"""Write a pruned token store: only the documents (or GPT samples) in a band of an analyzer index.

    python tools/prune_data.py --data-path data/corpus_text_document --index DIR/ppl \\
        --keep-percentile 25 75 --output-prefix data/pruned_text_document
    python tools/prune_data.py ... --keep-fraction 0.5 --order easy|hard|middle|random [--seed S]

The index's granularity decides what is kept: ``document`` keeps whole documents, byte for
byte; ``sample`` keeps GPT training samples, each as a document of one sequence, and needs
the training dataset flags the index was built with (``--split --seq-length --seed
--train-samples``). ``--keep-percentile`` keeps what a ``percentile_window`` of the same
band admits. Writes ``OUT.bin``, ``OUT.idx``, the source's tokenizer record
``OUT.tokenizer.json`` (when the source has one) and the manifest ``OUT.json`` (temporary
names, then renamed; the manifest last). See megatron/data_efficiency/analyzer/prune.py.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron.data import provenance  # noqa: E402
from megatron.data.indexed_dataset import MMapIndexedDataset  # noqa: E402
from megatron.data_efficiency.analyzer import prune  # noqa: E402
from megatron.data_efficiency.analyzer.index_io import MetricIndex, dataset_fingerprint  # noqa: E402
from megatron.errors import BadInputError, run_main  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-path", required=True, help="source token store prefix")
    p.add_argument("--index", required=True, help="analyzer metric folder DIR/<metric>")
    p.add_argument("--output-prefix", required=True)
    p.add_argument("--keep-percentile", nargs=2, type=float, metavar=("LO", "HI"))
    p.add_argument("--keep-fraction", type=float, metavar="F")
    p.add_argument("--order", choices=prune.ORDERS)
    p.add_argument("--seed", type=int, default=1234,
                   help="sample granularity: the dataset seed; also seeds --order random")
    p.add_argument("--split", default="969,30,1", help="sample granularity: as in training")
    p.add_argument("--seq-length", type=int, help="sample granularity: as in training")
    p.add_argument("--train-samples", type=int, help="sample granularity: as the analyzer got")
    p.add_argument("--data-cache-path", default=None)
    p.add_argument("--force", action="store_true", help="replace an existing output store")
    args = p.parse_args(argv)
    args.selection = prune.Selection(
        tuple(args.keep_percentile) if args.keep_percentile else None, args.keep_fraction,
        args.order, args.seed)
    try:
        args.selection.validate()
    except ValueError as err:
        p.error(str(err))
    return args


def _sample_dataset(args: argparse.Namespace):
    """The GPT training set the index numbers, and its fingerprint."""
    return prune.sample_dataset(args.data_path, args.index, args.split, args.seq_length,
                                args.seed, args.train_samples, args.data_cache_path)


def _open_index(args: argparse.Namespace, fingerprint: str) -> MetricIndex:
    try:
        index = MetricIndex.open(args.index, fingerprint)   # validates the arrays too
    except ValueError as err:
        raise BadInputError(f"{err} (the index must come from tools/analyze_data.py on "
                            f"--data-path {args.data_path})") from err
    return index


def main(argv: list[str] | None = None) -> prune.PruneResult:
    args = parse_args(argv)
    out = args.output_prefix
    if os.path.abspath(out) == os.path.abspath(args.data_path):
        raise BadInputError("--output-prefix is the source store itself")
    existing = [p for p in (out + ".bin", out + ".idx", out + ".json") if os.path.exists(p)]
    if existing and not args.force:
        raise BadInputError(f"output exists: {existing} (give --force to replace it)")
    store = MMapIndexedDataset(args.data_path)
    meta_granularity = prune.index_granularity(args.index)
    if meta_granularity == "document":
        fingerprint, dataset = dataset_fingerprint([args.data_path], "document"), None
    else:
        dataset, fingerprint = _sample_dataset(args)
    index = _open_index(args, fingerprint)
    ids = prune.kept_ids(index, args.selection)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    provenance.remove_record(out)   # an older output's
    if dataset is None:
        tokens = prune.write_documents(store, ids, out)
        total_tokens = len(store.tokens)
    else:
        tokens = prune.write_samples(dataset, store.dtype, ids, out)
        total_tokens = index.num_samples * (args.seq_length + 1)
    result = prune.PruneResult(out, meta_granularity, len(ids), index.num_samples, tokens,
                               total_tokens, prune.ids_hash(ids))
    record = provenance.read_record(args.data_path)
    if record is not None:   # the kept ids are the source's: same tokenizer, ids within its max
        kept = MMapIndexedDataset(out)
        provenance.write_record(out, record["tokenizer"], record["max_token_id"],
                                len(kept.sizes), len(kept.doc_idx) - 1)
    source = {"prefix": os.path.abspath(args.data_path), "fingerprint": fingerprint,
              "dtype": str(store.dtype)}
    if dataset is not None:
        source.update(split=args.split, seq_length=args.seq_length, seed=args.seed,
                      train_samples=args.train_samples)
    prune.write_manifest(out + ".json", prune.manifest_of(result, source, index,
                                                          args.selection))
    print(f"kept {result.kept:,} of {result.total:,} {meta_granularity}s, "
          f"{result.tokens_kept:,} of {result.tokens_total:,} tokens -> {out}.bin/.idx/.json")
    return result


if __name__ == "__main__":
    run_main(main)
