"""BERT WordPiece tokenization from a ``vocab.txt`` (one token per line, id = line number)."""

from __future__ import annotations

import unicodedata

from .tokenizer import MegatronTokenizer

_MAX_WORD_CHARS = 100  # longer words become [UNK], as in BERT


def load_vocab(vocab_file: str) -> dict[str, int]:
    vocab: dict[str, int] = {}
    with open(vocab_file, encoding="utf-8") as f:
        for line in f:
            token = line.rstrip("\n").strip()
            if token and token not in vocab:
                vocab[token] = len(vocab)
    if not vocab:
        raise ValueError(f"{vocab_file}: empty WordPiece vocabulary")
    return vocab


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    return ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cf")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    # All non-alphanumeric ASCII counts as punctuation (so "$" and "^" split), as in BERT.
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def basic_tokenize(text: str, lower_case: bool) -> list[str]:
    """Clean, split on whitespace and punctuation, isolate CJK characters, optionally lowercase."""
    chars = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            continue
        if _is_cjk(cp):
            chars.append(f" {ch} ")
        else:
            chars.append(" " if _is_whitespace(ch) else ch)
    words = []
    for word in "".join(chars).split():
        if lower_case:
            word = unicodedata.normalize("NFD", word.lower())
            word = "".join(c for c in word if unicodedata.category(c) != "Mn")
        current = ""
        for ch in word:
            if _is_punctuation(ch):
                if current:
                    words.append(current)
                words.append(ch)
                current = ""
            else:
                current += ch
        if current:
            words.append(current)
    return words


def wordpiece(word: str, vocab: dict[str, int], unk: str = "[UNK]") -> list[str]:
    """Greedy longest-match-first split of one word; continuation pieces start with ``##``."""
    if len(word) > _MAX_WORD_CHARS:
        return [unk]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
            end -= 1
        if end == start:
            return [unk]
        pieces.append(piece)
        start = end
    return pieces


class BertWordPieceTokenizer(MegatronTokenizer):
    """Megatron's ``BertWordPieceLowerCase`` / ``BertWordPieceCase``.

    Like Megatron, ``[BOS]`` / ``[EOS]`` and ``vocab_extra_ids`` sentinels ``<extra_id_i>`` are
    appended to the vocabulary when absent, so padded vocabulary sizes match Megatron's.
    ``eod`` is ``[SEP]`` (the separator between documents in BERT data).
    """

    def __init__(self, vocab_file: str, lower_case: bool = True, vocab_extra_ids: int = 0) -> None:
        super().__init__("BERT Lower Case" if lower_case else "BERT Upper Case")
        self.lower_case = lower_case
        self._vocab = load_vocab(vocab_file)
        for token in ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"):
            if token not in self._vocab:
                raise ValueError(f"{vocab_file}: the WordPiece vocabulary has no {token} token")
        for token in ["[BOS]", "[EOS]"] + [f"<extra_id_{i}>" for i in range(vocab_extra_ids)]:
            self._vocab.setdefault(token, len(self._vocab))
        self._inv_vocab = {v: k for k, v in self._vocab.items()}
        self.cls_id, self.sep_id = self._vocab["[CLS]"], self._vocab["[SEP]"]
        self.pad_id, self.mask_id = self._vocab["[PAD]"], self._vocab["[MASK]"]
        self.additional_special_tokens_ids = [self._vocab[f"<extra_id_{i}>"]
                                              for i in range(vocab_extra_ids)]

    def text_to_tokens(self, text: str) -> list[str]:
        return [p for w in basic_tokenize(text, self.lower_case) for p in wordpiece(w, self._vocab)]

    def tokenize(self, text: str) -> list[int]:
        return [self._vocab[t] for t in self.text_to_tokens(text)]

    def detokenize(self, token_ids) -> str:
        """Tokens joined by spaces with ``##`` continuations glued back (BERT's decode)."""
        text = " ".join(self._inv_vocab[int(i)] for i in token_ids)
        return text.replace(" ##", "").strip()

    @property
    def cls(self) -> int:
        return self.cls_id

    @property
    def sep(self) -> int:
        return self.sep_id

    @property
    def pad(self) -> int:
        return self.pad_id

    @property
    def mask(self) -> int:
        return self.mask_id

    @property
    def eod(self) -> int:
        return self.sep_id

    @property
    def bos(self) -> int:
        return self._vocab["[BOS]"]

    @property
    def eos(self) -> int:
        return self._vocab["[EOS]"]
