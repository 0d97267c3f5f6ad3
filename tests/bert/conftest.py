"""A slice of the default corpus (CPython standard library) as BERT data, built once."""
from __future__ import annotations

import os

import pytest

from tools import build_wordpiece_vocab, preprocess_data, prepare_default_corpus


@pytest.fixture(scope="session")
def bert_data(tmp_path_factory) -> dict:
    """Paths of a ~0.5 MB stdlib corpus: WordPiece vocab.txt and the sentence-level store."""
    d = tmp_path_factory.mktemp("bert_data")
    corpus = str(d / "corpus.jsonl")
    prepare_default_corpus.write_corpus(corpus, max_bytes=500_000, skip_tests=True)
    vocab = str(d / "vocab.txt")
    assert build_wordpiece_vocab.main(["--input", corpus, "--output", vocab,
                                       "--vocab-size", "1500"]) == 0
    prefix = str(d / "corpus")
    assert preprocess_data.main(["--input", corpus, "--output-prefix", prefix,
                                 "--tokenizer-type", "BertWordPieceLowerCase",
                                 "--vocab-file", vocab, "--split-sentences",
                                 "--log-interval", "0"]) == 0
    data = prefix + "_text_sentence"
    assert os.path.isfile(data + ".bin") and os.path.isfile(data + ".idx")
    return {"dir": str(d), "corpus": corpus, "vocab": vocab, "data": data}
