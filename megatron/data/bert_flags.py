"""BERT's own flags (Megatron's names and defaults), shared by ``pretrain_bert.py`` and
``tools/analyze_data.py --model bert``: they shape the ``BertDataset`` samples (one
segment or a sentence pair, shorter random targets, masking), so an analyzer that numbers
a BERT run's samples must read them as training does."""
from __future__ import annotations

import argparse

# What pretrain_bert.py defaults that a GPT run does not.
BERT_ARGS_DEFAULTS = {"tokenizer_type": "BertWordPieceLowerCase"}


def add_bert_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """BERT-only flags, with Megatron's names and defaults."""
    g = parser.add_argument_group("bert")
    g.add_argument("--bert-no-binary-head", action="store_false", dest="bert_binary_head",
                   help="no sentence-order (binary) head and loss; one segment per sample")
    g.add_argument("--mask-prob", type=float, default=0.15,
                   help="fraction of tokens chosen for masked-LM prediction")
    g.add_argument("--short-seq-prob", type=float, default=0.1,
                   help="probability of a shorter random target length per sample")
    return parser
