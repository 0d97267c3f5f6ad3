"""--tokenizer-type HuggingFaceTokenizer (alias HFTokenizer) with a Llama-style tokenizer
trained here: the tokenizer itself, tools/preprocess_data.py (1 and 2 workers, BOS per
document, --append-eod), pretrain_gpt.py on the store, the analyzer's voc index and the
index inspector's decoding, and the store's provenance record."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from megatron.data import provenance
from megatron.data.indexed_dataset import MMapIndexedDataset
from megatron.errors import BadConfigError, BadInputError
from megatron.tokenizer import build_tokenizer
from megatron.tokenizer.identity import tokenizer_identity
from tests.hf.hf_tokenizer import EXTRA_TEXTS, documents, make_hf_tokenizer, write_jsonl
from tests.reliability.helpers import tool

pytest.importorskip("transformers")
HF = "HuggingFaceTokenizer"


@pytest.fixture(scope="module")
def hf_data(tmp_path_factory):
    """(root, documents, tokenizer folder, store prefix made with --workers 1)."""
    root = tmp_path_factory.mktemp("hf_tokenizer")
    docs = documents()
    write_jsonl(str(root / "docs.jsonl"), docs)
    folder = make_hf_tokenizer(str(root / "tok"), docs)
    assert tool("preprocess_data").main([
        "--input", str(root / "docs.jsonl"), "--output-prefix", str(root / "one"),
        "--tokenizer-type", HF, "--tokenizer-model", folder, "--append-eod"]) == 0
    return root, docs, folder, str(root / "one_text_document")


def test_the_tokenizer_as_megatron_lm_builds_it(hf_data, tmp_path, monkeypatch):
    _, _, folder, _ = hf_data
    tok = build_tokenizer(HF, tokenizer_model=folder)
    assert tok.vocab_size == 300 and (tok.bos, tok.eos, tok.eod) == (1, 2, 2)
    assert tok.adds_bos and not tok.adds_eos
    for text in EXTRA_TEXTS:
        ids = tok.tokenize(text)
        assert ids[0] == tok.bos and ids[1:] == tok.tokenize_text(text)
        assert tok.detokenize(ids) == "<s>" + text            # exact, spaces included
    with pytest.raises(NotImplementedError, match="no PAD"):
        tok.pad
    # a bare tokenizer.json: the same ids, its specials by their conventional names
    bare = build_tokenizer("HFTokenizer", tokenizer_model=os.path.join(folder, "tokenizer.json"))
    assert (bare.vocab_size, bare.bos, bare.eod, bare.adds_bos) == (300, 1, 2, True)
    assert bare.tokenize(EXTRA_TEXTS[1]) == tok.tokenize(EXTRA_TEXTS[1])
    # the alias is the same tokenizer: the same identity
    assert tokenizer_identity("HFTokenizer", tok, tokenizer_model=folder) == \
        tokenizer_identity(HF, tok, tokenizer_model=folder)
    # not a local tokenizer: one line naming the path, nothing downloaded
    (tmp_path / "empty").mkdir()
    for path, error, message in ((str(tmp_path / "nope"), FileNotFoundError, "no such local"),
                                 ("meta-llama/Llama-2-7b-hf", FileNotFoundError, "no such local"),
                                 (str(tmp_path / "empty"), ValueError, "not a tokenizer folder"),
                                 (os.path.join(folder, "tokenizer_config.json"), ValueError,
                                  "not a tokenizer.json")):
        with pytest.raises(error, match=message) as err:
            build_tokenizer(HF, tokenizer_model=path)
        assert path in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setitem(sys.modules, "transformers", None)        # the extra not installed
    with pytest.raises(BadConfigError, match="requirements-eval.txt"):
        build_tokenizer(HF, tokenizer_model=folder)


def test_preprocess_with_workers_gives_one_store_of_bos_text_eos(hf_data):
    root, docs, folder, store = hf_data
    assert tool("preprocess_data").main([
        "--input", str(root / "docs.jsonl"), "--output-prefix", str(root / "two"),
        "--tokenizer-type", "HFTokenizer", "--tokenizer-model", folder, "--append-eod",
        "--workers", "2", "--chunk-size", "7"]) == 0
    for ext in (".bin", ".idx", ".tokenizer.json"):
        assert open(store + ext, "rb").read() == \
            open(str(root / "two_text_document") + ext, "rb").read(), ext
    tok = build_tokenizer(HF, tokenizer_model=folder)
    ds = MMapIndexedDataset(store)
    assert len(ds) == len(docs) and ds.dtype == np.uint16
    for i, text in enumerate(docs):
        ids = ds[i].tolist()
        assert ids[0] == tok.bos and ids[-1] == tok.eod and tok.eod not in ids[1:-1]
        assert tok.detokenize(ids[1:-1]) == text
    record = json.load(open(provenance.record_path(store)))["tokenizer"]
    assert record["type"] == HF and record["vocab_size"] == 300
    assert set(record["files"]) == {"tokenizer.json", "tokenizer_config.json"}
    assert record["special_ids"] == {"eod": 2, "bos": 1, "eos": 2}


def test_a_tokenizer_that_ends_texts_with_eos_gets_no_second_one(hf_data, tmp_path):
    root, docs, _, _ = hf_data
    folder = make_hf_tokenizer(str(tmp_path / "tok_eos"), docs, add_eos=True)
    assert build_tokenizer(HF, tokenizer_model=folder).adds_eos
    assert tool("preprocess_data").main([
        "--input", str(root / "docs.jsonl"), "--output-prefix", str(tmp_path / "e"),
        "--tokenizer-type", HF, "--tokenizer-model", folder, "--append-eod"]) == 0
    first = MMapIndexedDataset(str(tmp_path / "e_text_document"))[0].tolist()
    assert first[0] == 1 and first[-1] == 2 and first[-2] != 2


def test_pretrain_gpt_trains_on_the_store_and_refuses_another_tokenizer(hf_data, tmp_path):
    import pretrain_gpt
    from megatron.initialize import get_run_config, get_tokenizer
    root, docs, folder, store = hf_data
    flags = ["--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "2",
             "--seq-length", "32", "--max-position-embeddings", "32", "--micro-batch-size", "2",
             "--global-batch-size", "4", "--train-iters", "3", "--lr", "3e-3",
             "--log-interval", "1", "--eval-interval", "3", "--eval-iters", "1", "--seed", "7",
             "--use-cpu-initialization", "--data-path", store, "--split", "90,10,0",
             "--tokenizer-type", HF, "--tokenizer-model", folder]
    state = pretrain_gpt.main(flags)
    assert state.iteration == 3
    config = get_run_config()
    assert (config.tokenizer.orig_vocab_size, config.model.padded_vocab_size) == (300, 384)
    assert get_tokenizer().eod == 2
    other = make_hf_tokenizer(str(tmp_path / "other"), docs[:60])
    flags[flags.index(folder)] = other
    with pytest.raises(BadInputError) as err:
        pretrain_gpt.main(flags)
    assert "the token store was made with tokenizer HuggingFaceTokenizer" in str(err.value)
    assert "file tokenizer.json:" in str(err.value)


def test_the_analyzer_indexes_voc_and_the_inspector_decodes(hf_data, tmp_path, capsys):
    root, docs, folder, store = hf_data
    assert tool("analyze_data").main(["--data-path", store, "--metrics", "total_vocab_freq",
                                      "voc", "--save-path", str(tmp_path / "idx"),
                                      "--quiet"]) == 0
    counts = np.load(tmp_path / "idx" / "total_vocab_freq" / "counts.npy")
    assert counts[1] == counts[2] == len(docs)                   # one BOS, one EOS each
    voc = np.load(tmp_path / "idx" / "voc" / "sample_to_metric.npy")
    ds = MMapIndexedDataset(store)
    p = counts / counts.sum()
    assert voc[5] == pytest.approx(-np.log(p[ds[5]]).sum(), rel=1e-6)
    capsys.readouterr()
    assert tool("inspect_index").main([str(tmp_path / "idx" / "voc"), "--data-path", store,
                                       "--tokenizer-type", HF, "--tokenizer-model", folder,
                                       "--show", "1", "--max-chars", "100000"]) == 0
    shown = capsys.readouterr().out
    assert "<s>" in shown and "</s>" in shown
    assert sum(("<s>" + d + "</s>") in shown for d in docs) == 2     # easiest and hardest
    other = make_hf_tokenizer(str(tmp_path / "other"), docs[:60])
    with pytest.raises(BadInputError, match="made with tokenizer HuggingFaceTokenizer"):
        tool("inspect_index").main([str(tmp_path / "idx" / "voc"), "--data-path", store,
                                    "--tokenizer-type", HF, "--tokenizer-model", other])


def test_trust_remote_code_is_refused_not_ignored(hf_data, tmp_path, capsys):
    """Megatron-LM's / Megatron-DeepSpeed's --trust-remote-code: no tokenizer code is run
    here, so training and preprocessing refuse the flag with the reason."""
    from megatron.arguments import ArgumentValidationError, parse_args, validate_args
    root, _, folder, _ = hf_data
    with pytest.raises(ArgumentValidationError, match="--trust-remote-code is not supported"):
        validate_args(parse_args(args=[
            "--num-layers", "2", "--hidden-size", "8", "--num-attention-heads", "2",
            "--seq-length", "8", "--micro-batch-size", "1", "--lr", "1e-3", "--train-iters",
            "1", "--data-path", "x", "--tokenizer-type", "HFTokenizer", "--tokenizer-model",
            folder, "--trust-remote-code"]))
    with pytest.raises(SystemExit):
        tool("preprocess_data").main([
            "--input", str(root / "docs.jsonl"), "--output-prefix", str(tmp_path / "x"),
            "--tokenizer-type", HF, "--tokenizer-model", folder, "--trust-remote-code"])
    assert "--trust-remote-code is not supported" in capsys.readouterr().err
    assert not os.listdir(tmp_path)
