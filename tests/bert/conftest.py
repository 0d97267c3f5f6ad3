"""A slice of the default corpus (CPython standard library) as BERT data, built once."""
from __future__ import annotations

import pytest

from tests.bert.bert_corpus import bert_data_paths, bert_index_path


@pytest.fixture(scope="session")
def bert_data(tmp_path_factory) -> dict:
    """Paths of a ~0.5 MB stdlib corpus: WordPiece vocab.txt and the sentence-level store."""
    return bert_data_paths(tmp_path_factory)


@pytest.fixture(scope="session")
def bert_index(bert_data, tmp_path_factory) -> str:
    """The analyzer's ``seqlen`` and ``seqlen_voc`` indexes of the BERT test runs' training
    samples, one folder (``bert_corpus.bert_index_path``)."""
    return bert_index_path(tmp_path_factory)
