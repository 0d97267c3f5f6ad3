"""GPT-2 BPE, BERT WordPiece and SentencePiece tokenizers built from tiny files made here."""

import json
import os
import sysconfig

import pytest

from megatron.tokenizer import build_tokenizer, vocab_size_with_padding
from megatron.tokenizer.gpt2_tokenization import _PRETOKENIZE, bytes_to_unicode

V = 600  # SentencePiece vocabulary of the models trained here

MERGES = [("h", "e"), ("Ġ", "t"), ("Ġt", "he"), ("l", "l"), ("'", "ll"), ("o", "w")]


@pytest.fixture
def gpt2_files(tmp_path):
    symbols = list(bytes_to_unicode().values()) + [a + b for a, b in MERGES] + ["<|endoftext|>"]
    vocab = {s: i for i, s in enumerate(dict.fromkeys(symbols))}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in MERGES))
    return str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"), vocab


def test_byte_alphabet_is_a_bijection():
    m = bytes_to_unicode()
    assert len(set(m.values())) == 256 and m[ord("A")] == "A" and m[ord(" ")] == "Ġ"
    assert not any(c.isspace() for c in m.values())


def test_gpt2_pretokenizer():
    assert _PRETOKENIZE.findall("I'll  go, 42x!\n") == ["I", "'ll", " ", " go", ",", " 42", "x", "!", "\n"]


def test_gpt2_bpe(gpt2_files):
    vocab_file, merge_file, vocab = gpt2_files
    tok = build_tokenizer("GPT2BPETokenizer", vocab_file=vocab_file, merge_file=merge_file)
    assert tok.vocab_size == len(vocab) and tok.eod == vocab["<|endoftext|>"]
    assert tok.tokenize("he the") == [vocab["he"], vocab["Ġthe"]]
    assert tok.tokenize("hello") == [vocab["he"], vocab["ll"], vocab["o"]]
    assert tok.tokenize("I'll") == [vocab["I"], vocab["'ll"]]
    text = "def f(x):\n\treturn 'héllo 漢字' * 3  # ok\n\n"
    assert tok.detokenize(tok.tokenize(text)) == text
    assert tok.inv_vocab[tok.vocab["Ġthe"]] == "Ġthe"
    with pytest.raises(NotImplementedError, match="GPT2 BPE.*MASK"):
        tok.mask


def test_gpt2_vocab_merges_mismatch(tmp_path, gpt2_files):
    vocab_file, merge_file, vocab = gpt2_files
    vocab.pop("Ġthe")
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    tok = build_tokenizer("GPT2BPETokenizer", vocab_file=vocab_file, merge_file=merge_file)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.tokenize(" the")


BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "quick", "##ly", "un",
              "##aff", "##able", ",", "!", "cafe", "漢", "字", "UN", "Quick"]


@pytest.fixture
def bert_vocab(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(BERT_VOCAB) + "\n")
    return str(path)


def test_bert_lower_case(bert_vocab):
    tok = build_tokenizer("BertWordPieceLowerCase", vocab_file=bert_vocab, vocab_extra_ids=2)
    v = {t: i for i, t in enumerate(BERT_VOCAB)}
    ids = tok.tokenize("UNaffable,  Quickly!\tCafé 漢字 zzz")
    assert [tok.inv_vocab[i] for i in ids] == ["un", "##aff", "##able", ",", "quick", "##ly", "!",
                                              "cafe", "漢", "字", "[UNK]"]
    assert (tok.cls, tok.sep, tok.pad, tok.mask) == (v["[CLS]"], v["[SEP]"], v["[PAD]"], v["[MASK]"])
    assert tok.vocab_size == len(BERT_VOCAB) + 4  # [BOS], [EOS] and 2 extra ids, as in Megatron
    assert tok.inv_vocab[tok.additional_special_tokens_ids[1]] == "<extra_id_1>"
    assert tok.detokenize(ids[:7]) == "unaffable , quickly !"


def test_bert_case(bert_vocab):
    tok = build_tokenizer("BertWordPieceCase", vocab_file=bert_vocab)
    assert [tok.inv_vocab[i] for i in tok.tokenize("UNaffable Quickly the")] == \
        ["UN", "##aff", "##able", "Quick", "##ly", "the"]


def test_bert_vocab_without_specials(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("a\nb\n")
    with pytest.raises(ValueError, match=r"v\.txt.*\[CLS\]"):
        build_tokenizer("BertWordPieceLowerCase", vocab_file=str(path))


def _stdlib_text(n_bytes=60_000):
    root = sysconfig.get_paths()["stdlib"]
    text = ""
    for name in sorted(os.listdir(root)):
        if name.endswith(".py") and len(text) < n_bytes:
            text += open(os.path.join(root, name), encoding="utf-8").read()
    return text[:n_bytes]


@pytest.fixture(scope="module")
def sp_models(tmp_path_factory):
    import sentencepiece as spm

    out = tmp_path_factory.mktemp("sp")
    lines = [l for l in _stdlib_text().splitlines() if l.strip()]
    paths = {}
    for name, extra in (("eos", {}), ("noeos", {"eos_id": -1, "pad_id": 3})):
        spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(out / name),
                                       vocab_size=V, byte_fallback=True, minloglevel=2,
                                       num_threads=1, **extra)
        paths[name] = str(out / name) + ".model"
    return paths


def test_gpt_sentencepiece(sp_models):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=sp_models["eos"])
    tok = build_tokenizer("GPTSentencePieceTokenizer", tokenizer_model=sp_models["eos"])
    assert tok.vocab_size == sp.get_piece_size() == V and tok.eod == sp.eos_id() == 2
    assert tok.tokenize("import os") == sp.encode_as_ids("import os")
    assert tok.detokenize(tok.tokenize("x = 1 + 2")) == "x = 1 + 2"
    with pytest.raises(NotImplementedError, match="PAD"):
        tok.pad
    no_eos = build_tokenizer("GPTSentencePieceTokenizer", tokenizer_model=sp_models["noeos"])
    assert no_eos.eod == V and no_eos.vocab_size == V + 1 and no_eos.pad == 3
    assert no_eos.detokenize(no_eos.tokenize("a b") + [no_eos.eod]) == "a b"


def test_sentencepiece_with_specials(sp_models):
    tok = build_tokenizer("SentencePieceTokenizer", tokenizer_model=sp_models["eos"], vocab_extra_ids=3)
    # <CLS> <SEP> <EOD> <MASK> <PAD> are new; bos/eos exist in the model; 3 sentinels.
    assert tok.vocab_size == V + 5 + 3
    specials = {tok.cls, tok.sep, tok.eod, tok.mask, tok.pad}
    assert len(specials) == 5 and min(specials) >= V and tok.eos == 2 and tok.bos == 1
    ids = tok.tokenize("def<MASK> x<extra_id_2>")
    assert tok.mask in ids and tok.additional_special_tokens_ids[2] == ids[-1]
    assert tok.detokenize(ids) == "def <MASK> x <extra_id_2>"


def test_build_tokenizer_errors(tmp_path):
    with pytest.raises(ValueError, match="--merge-file"):
        build_tokenizer("GPT2BPETokenizer", vocab_file="v.json")
    with pytest.raises(ValueError, match="not supported"):
        build_tokenizer("NoSuchTokenizer")
    with pytest.raises(FileNotFoundError, match="missing.model"):
        build_tokenizer("GPTSentencePieceTokenizer", tokenizer_model=str(tmp_path / "missing.model"))
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bad.model"):
        build_tokenizer("GPTSentencePieceTokenizer", tokenizer_model=str(bad))


def test_vocab_size_with_padding():
    assert vocab_size_with_padding(50257, 128, 1) == 50304
    assert vocab_size_with_padding(50257, 128, 2) == 50432
    assert vocab_size_with_padding(512, 128, 4) == 512
