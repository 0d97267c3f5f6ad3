"""Provenance: a token store records its tokenizer and training (and the analyzer, and the
index inspector) refuses another one, or ids past its vocabulary, before step 1; a store
without a record is warned about once; preprocessing only empty documents is an error."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

import pretrain_gpt
from megatron.data import provenance
from megatron.data.indexed_dataset import MMapIndexedDatasetBuilder
from megatron.errors import BadInputError
from megatron.tokenizer.identity import NULL_TYPE
from tests.reliability.helpers import gpt_flags, tool


def _unrecorded_copy(store: str, dst: str) -> str:
    for ext in (".bin", ".idx"):
        shutil.copy(store + ext, dst + ext)
    return dst


def test_the_store_records_its_tokenizer(corpus):
    record = json.load(open(provenance.record_path(corpus.store)))
    tok = record["tokenizer"]
    assert tok["type"] == "GPT2BPETokenizer" and tok["vocab_size"] == 263
    assert set(tok["files"]) == {"vocab_file", "merge_file"} and tok["special_ids"] == {"eod": 262}
    assert record["max_token_id"] == 262 and record["documents"] == 150


def test_training_refuses_a_store_of_another_tokenizer_before_step_1(corpus, capsys):
    flags = gpt_flags(corpus, "--num-workers", "0", iters=2)
    i = flags.index("--tokenizer-type")
    flags[i:i + 6] = corpus.tokenizer_b
    with pytest.raises(BadInputError) as err:
        pretrain_gpt.main(flags)
    message = str(err.value)
    assert message.startswith(f"{corpus.store}: the token store was made with tokenizer "
                              "GPT2BPETokenizer (vocab 263")
    assert "this run uses GPT2BPETokenizer (vocab 261" in message
    assert "vocab_size: 263 -> 261" in message and "file merge_file" in message
    assert "number of parameters" not in capsys.readouterr().out   # nothing was built


def test_ids_outside_the_vocabulary_are_found_before_step_1(corpus, tmp_path):
    null = {"type": NULL_TYPE, "vocab_size": 200}
    with pytest.raises(BadInputError, match="holds token id 262, outside the vocabulary"):
        provenance.check_store(corpus.store, null)                    # from the record
    bare = _unrecorded_copy(corpus.store, str(tmp_path / "bare"))
    with pytest.raises(BadInputError, match="holds token id 262, outside the vocabulary"):
        provenance.check_store(bare, null)                            # scanned
    flags = gpt_flags(corpus, "--num-workers", "0", iters=2)
    i = flags.index("--tokenizer-type")
    flags[i:i + 6] = ["--vocab-size", "200"]
    with pytest.raises(BadInputError, match="outside the vocabulary"):   # the whole run
        pretrain_gpt.main(flags)


def test_a_store_without_a_record_is_warned_about_once(corpus, tmp_path, capsys):
    bare = _unrecorded_copy(corpus.store, str(tmp_path / "bare"))
    identity = json.load(open(provenance.record_path(corpus.store)))["tokenizer"]
    for _ in range(2):
        provenance.check_store(bare, identity)
    err = capsys.readouterr().err
    assert err.count("no tokenizer record") == 1 and "its ids were scanned" in err
    # a record left behind by a store rewritten by another tool describes other files
    stale = _unrecorded_copy(corpus.store, str(tmp_path / "stale"))
    shutil.copy(provenance.record_path(corpus.store), provenance.record_path(stale))
    builder = MMapIndexedDatasetBuilder(stale + ".bin", dtype=np.uint16)
    builder.add_item(np.array([1, 2, 3], dtype=np.uint16))
    builder.end_document()
    builder.finalize(stale + ".idx")
    assert provenance.read_record(stale) is None
    assert "describes other files than" in capsys.readouterr().err


def test_preprocessing_only_empty_documents_is_an_error(corpus, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": ""}\n{"text": ""}\n')
    prefix = str(tmp_path / "out")
    assert tool("preprocess_data").main(["--input", str(empty), "--output-prefix", prefix,
                                              *corpus.tokenizer_a]) == 1
    assert "all 2 documents are empty" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["empty.jsonl"]


def test_the_analyzer_and_the_index_inspector_check_the_store(corpus, tmp_path, capsys):
    assert tool("analyze_data").main(["--data-path", corpus.store, "--metrics", "seqlen",
                                           "--save-path", str(tmp_path / "idx"), "--quiet",
                                           "--vocab-size", "200"]) == 2
    assert "holds token id 262, outside the vocabulary" in capsys.readouterr().err
    assert tool("analyze_data").main(["--data-path", corpus.store, "--metrics", "seqlen",
                                           "--save-path", str(tmp_path / "idx"),
                                           "--quiet"]) == 0
    with pytest.raises(BadInputError, match="made with tokenizer GPT2BPETokenizer \\(vocab 263"):
        tool("inspect_index").main([str(tmp_path / "idx" / "seqlen"), "--data-path",
                                         corpus.store, *corpus.tokenizer_b])
