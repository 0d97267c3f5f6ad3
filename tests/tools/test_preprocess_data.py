"""tools/preprocess_data.py and tools/train_tokenizer.py on a slice of the real default corpus."""

import json
import os

import numpy as np
import pytest

from megatron.data.indexed_dataset import MMapIndexedDataset
from megatron.tokenizer import build_tokenizer

from tests.tools.tool_loader import load_tool

corpus, trainer, prep = (load_tool(n) for n in
                         ("prepare_default_corpus", "train_tokenizer", "preprocess_data"))


@pytest.fixture(scope="module")
def stdlib_slice(tmp_path_factory):
    """8 real stdlib files plus an empty document, and a SentencePiece model trained on them."""
    d = tmp_path_factory.mktemp("corpus")
    corpus.write_corpus(str(d / "raw.jsonl"), max_files=8)
    lines = open(d / "raw.jsonl", encoding="utf-8").read().splitlines()
    lines.insert(3, json.dumps({"text": "", "path": "empty.py"}))
    (d / "c.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert trainer.main(["--input", str(d / "c.jsonl"), "--model-prefix", str(d / "sp"),
                         "--vocab-size", "600"]) == 0
    return d


def _run(d, out, *extra):
    return prep.main(["--input", str(d / "c.jsonl"), "--output-prefix", str(d / out),
                      "--tokenizer-type", "GPTSentencePieceTokenizer",
                      "--tokenizer-model", str(d / "sp.model"), "--append-eod", *extra])


def test_tokenizer_round_trips_code(stdlib_slice):
    tok = build_tokenizer("GPTSentencePieceTokenizer", tokenizer_model=str(stdlib_slice / "sp.model"))
    assert tok.vocab_size == 600
    code = "class A:\n\tdef f(self, x):  # ünïcode ✓\n        return {'a': [1,2]}\n\n\n"
    assert tok.detokenize(tok.tokenize(code)) == code


def test_preprocess_round_trip_and_workers(stdlib_slice, capsys):
    d = stdlib_slice
    assert _run(d, "one", "--log-interval", "2") == 0
    captured = capsys.readouterr()
    assert "1 empty documents skipped" in captured.out and "docs/s" in captured.err
    assert _run(d, "two", "--workers", "2", "--chunk-size", "1") == 0
    for ext in (".bin", ".idx"):
        assert open(d / f"one_text_document{ext}", "rb").read() == \
            open(d / f"two_text_document{ext}", "rb").read()
    ds = MMapIndexedDataset(str(d / "one_text_document"))
    tok = build_tokenizer("GPTSentencePieceTokenizer", tokenizer_model=str(d / "sp.model"))
    texts = [json.loads(l)["text"] for l in open(d / "c.jsonl", encoding="utf-8")]
    texts = [t for t in texts if t]
    assert ds.dtype == np.uint16 and len(ds) == len(texts) == 8
    np.testing.assert_array_equal(ds.doc_idx, np.arange(9))
    for i, text in enumerate(texts):
        assert ds[i][-1] == tok.eod
        assert tok.detokenize(ds[i][:-1].tolist()) == text


def test_malformed_line_reports_line_number(tmp_path, stdlib_slice, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c"\n{"text": "d"}\n')
    for workers in ("1", "2"):
        rc = prep.main(["--input", str(bad), "--output-prefix", str(tmp_path / "o"), "--workers",
                        workers, "--tokenizer-type", "GPTSentencePieceTokenizer",
                        "--tokenizer-model", str(stdlib_slice / "sp.model")])
        assert rc == 1
        assert f"{bad}:3: malformed JSON" in capsys.readouterr().err
        assert sorted(os.listdir(tmp_path)) == ["bad.jsonl"]  # no partial outputs


@pytest.mark.parametrize("content,message", [
    (b'{"text": "a"}\n{"body": "b"}\n', ":2: no string value for json key 'text'"),
    (b'{"text": "a"}\n\n{"text": "\xff"}\n', ":3: not UTF-8"),
])
def test_bad_documents_are_errors(tmp_path, stdlib_slice, capsys, content, message):
    bad = tmp_path / "k.jsonl"
    bad.write_bytes(content)
    assert prep.main(["--input", str(bad), "--output-prefix", str(tmp_path / "o"),
                      "--tokenizer-type", "GPTSentencePieceTokenizer",
                      "--tokenizer-model", str(stdlib_slice / "sp.model")]) == 1
    assert f"{bad}{message}" in capsys.readouterr().err


def test_train_tokenizer_reports_bad_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "abc def"}\n{"text": "x"\n')
    assert trainer.main(["--input", str(bad), "--model-prefix", str(tmp_path / "m"),
                         "--vocab-size", "300"]) == 1
    assert f"{bad}:2: malformed JSON" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["bad.jsonl"]


def test_split_sentences():
    text = "Dr. Smith arrived. He said \"Hi!\" Then 3 cats left? Yes.\n\nnew para e.g. this one"
    assert prep.split_sentences(text) == [
        "Dr. Smith arrived.", 'He said "Hi!"', "Then 3 cats left?", "Yes.", "new para e.g. this one"]
    assert prep.split_sentences("A b\nc. D e.", keep_newlines=True) == ["A b\nc.", "D e."]
    assert prep.split_sentences("A b\nc. D e.") == ["A b c.", "D e."]


def test_split_sentences_bert_output(tmp_path, capsys):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", ".", "dog", "ran"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab))
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": "The cat sat. The dog ran."}) + "\n"
                                       + json.dumps({"text": "   "}) + "\n"
                                       + json.dumps({"text": "Dog sat."}) + "\n")
    assert prep.main(["--input", str(tmp_path / "in.jsonl"), "--output-prefix", str(tmp_path / "b"),
                      "--tokenizer-type", "BertWordPieceLowerCase", "--split-sentences",
                      "--vocab-file", str(tmp_path / "vocab.txt")]) == 0
    ds = MMapIndexedDataset(str(tmp_path / "b_text_sentence"))
    assert [s.tolist() for s in ds[0:3]] == [[5, 6, 7, 8], [5, 9, 10, 8], [9, 7, 8]]
    np.testing.assert_array_equal(ds.doc_idx, [0, 2, 3])
    assert "1 empty documents skipped" in capsys.readouterr().out


def test_cut_short_line_empty_input_and_directory(tmp_path, stdlib_slice, capsys):
    flags = ["--output-prefix", str(tmp_path / "o"), "--tokenizer-type",
             "GPTSentencePieceTokenizer", "--tokenizer-model", str(stdlib_slice / "sp.model")]
    cut = tmp_path / "cut.jsonl"
    cut.write_text('{"text": "a"}\n{"text": "bcd"\n')      # line 2 ends after its 14th char
    assert prep.main(["--input", str(cut), *flags]) == 1
    err = capsys.readouterr().err
    assert f"{cut}:2: malformed JSON at column 15 (the end of the line: is it cut short?)" in err
    assert "at at" not in err
    unterminated = tmp_path / "u.jsonl"
    unterminated.write_text('{"text": "abc\n')
    assert prep.main(["--input", str(unterminated), *flags]) == 1
    err = capsys.readouterr().err
    assert f"{unterminated}:1: malformed JSON at column 10: Unterminated string" in err
    assert "at at" not in err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert prep.main(["--input", str(empty), *flags]) == 1
    assert f"{empty}: no documents" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["cut.jsonl", "empty.jsonl", "u.jsonl"]
    with pytest.raises(SystemExit):
        prep.main(["--input", str(tmp_path), *flags])
    assert "is a directory" in capsys.readouterr().err
