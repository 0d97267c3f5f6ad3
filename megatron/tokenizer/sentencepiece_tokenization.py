"""SentencePiece tokenizers (``--tokenizer-model``), Megatron's two flavours.

* ``SentencePieceTokenizer`` (BERT/T5 style): special tokens ``<CLS> <SEP> <EOD> <MASK>``, pad,
  bos, eos and ``<extra_id_i>`` sentinels are appended to the model's pieces when the model
  lacks them; occurrences of those strings in the text map to their ids.
* ``GPTSentencePieceTokenizer``: the model's pieces only; ``eod`` is the model's eos id. A model
  trained without eos gets one extra id ``<eod>`` appended after its pieces.
"""

from __future__ import annotations

import os

import regex

from .tokenizer import MegatronTokenizer


def _load(model_file: str):
    import sentencepiece as spm

    if not os.path.isfile(model_file):
        raise FileNotFoundError(f"--tokenizer-model {model_file}: file not found")
    sp = spm.SentencePieceProcessor()
    try:
        sp.Load(model_file)
    except (OSError, RuntimeError) as e:
        raise ValueError(f"--tokenizer-model {model_file}: not a SentencePiece model ({e})") from None
    return sp


def _piece_vocab(sp) -> tuple[dict[str, int], dict[int, str]]:
    inv = {i: sp.id_to_piece(i) for i in range(sp.get_piece_size())}
    return {p: i for i, p in inv.items()}, inv


class SentencePieceTokenizer(MegatronTokenizer):
    """Megatron's ``SentencePieceTokenizer`` with appended special tokens."""

    def __init__(self, model_file: str, vocab_extra_ids: int = 0) -> None:
        super().__init__("SentencePieceTokenizer")
        self.tokenizer = _load(model_file)
        self._vocab, self._inv_vocab = _piece_vocab(self.tokenizer)
        self._special: dict[str, int] = {}
        for token in ("<CLS>", "<SEP>", "<EOD>", "<MASK>"):
            self._add_special(token)
        sp = self.tokenizer
        self._pad = self._add_special(sp.id_to_piece(sp.pad_id()) if sp.pad_id() >= 0 else "<PAD>")
        self._bos = self._add_special(sp.id_to_piece(sp.bos_id()) if sp.bos_id() >= 0 else "<BOS>")
        self._eos = self._add_special(sp.id_to_piece(sp.eos_id()) if sp.eos_id() >= 0 else "<EOS>")
        self.additional_special_tokens_ids = [self._add_special(f"<extra_id_{i}>")
                                              for i in range(vocab_extra_ids)]
        # Longest first so that "<extra_id_10>" wins over a hypothetical "<extra_id_1>" prefix.
        alternatives = sorted(self._special, key=len, reverse=True)
        self._special_re = regex.compile("|".join(regex.escape(t) for t in alternatives))

    def _add_special(self, token: str) -> int:
        if token not in self._vocab:
            new_id = len(self._vocab)
            self._vocab[token], self._inv_vocab[new_id] = new_id, token
        self._special[token] = self._vocab[token]
        return self._vocab[token]

    def tokenize(self, text: str) -> list[int]:
        ids, pos = [], 0
        for m in self._special_re.finditer(text):
            if m.start() > pos:
                ids.extend(self.tokenizer.encode_as_ids(text[pos:m.start()]))
            ids.append(self._special[m.group()])
            pos = m.end()
        if pos < len(text):
            ids.extend(self.tokenizer.encode_as_ids(text[pos:]))
        return ids

    def detokenize(self, token_ids) -> str:
        """Decodes runs of model pieces; special tokens appear as their strings."""
        parts, run = [], []
        for i in map(int, token_ids):
            token = self._inv_vocab.get(i)
            if token in self._special:
                if run:
                    parts.append(self.tokenizer.decode_ids(run))
                    run = []
                parts.append(token)
            else:
                run.append(i)
        if run:
            parts.append(self.tokenizer.decode_ids(run))
        return " ".join(parts)

    @property
    def cls(self) -> int:
        return self._special["<CLS>"]

    @property
    def sep(self) -> int:
        return self._special["<SEP>"]

    @property
    def eod(self) -> int:
        return self._special["<EOD>"]

    @property
    def mask(self) -> int:
        return self._special["<MASK>"]

    @property
    def pad(self) -> int:
        return self._pad

    @property
    def bos(self) -> int:
        return self._bos

    @property
    def eos(self) -> int:
        return self._eos


class GPTSentencePieceTokenizer(MegatronTokenizer):
    """Megatron's ``GPTSentencePieceTokenizer``: plain SentencePiece ids, eod = eos."""

    def __init__(self, model_file: str) -> None:
        super().__init__("GPTSentencePieceTokenizer")
        self.tokenizer = _load(model_file)
        self._vocab, self._inv_vocab = _piece_vocab(self.tokenizer)
        self._eod = self.tokenizer.eos_id()
        if self._eod < 0:  # model trained with eos disabled: give documents an end marker anyway
            self._eod = len(self._vocab)
            self._vocab["<eod>"], self._inv_vocab[self._eod] = self._eod, "<eod>"

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode_as_ids(text)

    def detokenize(self, token_ids) -> str:
        """Decodes the pieces; an appended ``<eod>`` id (if any) is dropped from the text."""
        size = self.tokenizer.get_piece_size()
        return self.tokenizer.decode_ids([int(i) for i in token_ids if int(i) < size])

    @property
    def eod(self) -> int:
        return self._eod

    @property
    def eos(self) -> int:
        return self._eod

    @property
    def bos(self) -> int:
        if self.tokenizer.bos_id() < 0:
            return self._missing("BOS")
        return self.tokenizer.bos_id()

    @property
    def pad(self) -> int:
        if self.tokenizer.pad_id() < 0:
            return self._missing("PAD")
        return self.tokenizer.pad_id()
