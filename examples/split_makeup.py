"""What a token store's training and validation splits are made of: per split, its
documents, tokens, and the documents (and share of tokens) whose text contains any of the
--match strings. The study's README uses it to show how many codec tables each split holds.

    python examples/split_makeup.py --data-path PREFIX --split 99,1,0 \
        --tokenizer-model SP.model --match decoding_table decoding_map
"""
from __future__ import annotations

import argparse
import os
import sys


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from megatron.data.dataset_utils import get_train_valid_test_split_  # noqa: E402
from megatron.data.indexed_dataset import MMapIndexedDataset  # noqa: E402
from megatron.tokenizer import build_tokenizer  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-path", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--tokenizer-model", required=True, help="the store's SentencePiece model")
    p.add_argument("--match", nargs="+", required=True)
    args = p.parse_args(argv)
    store = MMapIndexedDataset(args.data_path)
    tokenizer = build_tokenizer("GPTSentencePieceTokenizer", tokenizer_model=args.tokenizer_model)
    bounds = get_train_valid_test_split_(args.split, len(store.doc_idx) - 1)
    for name, first, last in (("train", bounds[0], bounds[1]), ("valid", bounds[1], bounds[2])):
        tokens = matched_tokens = matched_docs = 0
        for k in range(first, last):
            ids = [int(t) for s in range(store.doc_idx[k], store.doc_idx[k + 1]) for t in store[s]]
            text = tokenizer.detokenize(ids)
            hit = any(m in text for m in args.match)
            tokens += len(ids)
            matched_tokens += len(ids) * hit
            matched_docs += hit
        share = matched_tokens / tokens if tokens else float("nan")
        print(f"{name}: {last - first} documents ({matched_docs} matching), {tokens:,} tokens, "
              f"{share:.1%} in matching documents")
    return 0


if __name__ == "__main__":
    sys.exit(main())
