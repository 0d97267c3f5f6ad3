"""The BERT tests' data, built once a session: the ``bert_data`` / ``bert_index`` fixtures
(conftest.py) and the jobs of the shared 2-rank spawn (``two_rank_jobs``, which are built
before any fixture of theirs can be asked for) read the same folders."""
from __future__ import annotations

import os

from tools import build_wordpiece_vocab, preprocess_data, prepare_default_corpus

_BUILT: dict[str, object] = {}


def bert_data_paths(tmp_path_factory) -> dict:
    """Paths of a ~0.5 MB stdlib corpus: WordPiece vocab.txt and the sentence-level store."""
    if "data" in _BUILT:
        return _BUILT["data"]
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
    _BUILT["data"] = {"dir": str(d), "corpus": corpus, "vocab": vocab, "data": data}
    return _BUILT["data"]


def bert_index_path(tmp_path_factory) -> str:
    """The analyzer's ``seqlen`` and ``seqlen_voc`` indexes of the BERT test runs' training
    samples (``test_pretrain_bert._flags``: seed 11, --seq-length 32, split 80,15,5; sized
    for 64 samples, which builds the same samples mapping as the runs' 32), one folder."""
    if "index" in _BUILT:
        return _BUILT["index"]
    from megatron.data_efficiency.analyzer.analyzer import AnalyzerConfig
    from megatron.data_efficiency.analyzer.bert_samples import BertSampleParams, run_bert_analyzer
    data = bert_data_paths(tmp_path_factory)
    out = str(tmp_path_factory.mktemp("bert_index") / "index")
    run_bert_analyzer(AnalyzerConfig(
        data_prefix=data["data"], save_path=out, metrics=("seqlen", "seqlen_voc"),
        granularity="sample", split="80,15,5", seq_length=32, seed=11, train_samples=64,
        cache_dir=data["dir"], progress=False), BertSampleParams())
    _BUILT["index"] = out
    return out
