"""GPT-2 byte-level BPE from ``vocab.json`` + ``merges.txt`` (the files OpenAI / HF publish)."""

from __future__ import annotations

import json
from functools import lru_cache

import regex

from .tokenizer import MegatronTokenizer

# GPT-2's pre-tokenizer: contractions, letter runs, digit runs, other symbol runs (each with an
# optional leading space) and whitespace, where a whitespace run leaves its last space to the next word.
_PRETOKENIZE = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

_CACHE_LIMIT = 200_000  # words kept in the BPE cache before it is cleared


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """Map every byte to a printable unicode character (GPT-2's reversible byte alphabet).

    Printable Latin-1 bytes map to themselves; the others (controls, space, ...) are moved to
    code points 256 and up, so no BPE symbol is whitespace or a control character.
    """
    keep = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
            + list(range(ord("®"), ord("ÿ") + 1)))
    mapping, extra = {}, 0
    for b in range(256):
        if b in keep:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def read_merges(merge_file: str) -> list[tuple[str, str]]:
    """Merge rules in priority order; ``#version`` header and blank lines are skipped."""
    merges = []
    with open(merge_file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#version"):
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{merge_file}:{lineno}: a merge rule needs two symbols, got {line!r}")
            merges.append((parts[0], parts[1]))
    return merges


class GPT2BPE:
    """Byte-level BPE encoder/decoder."""

    def __init__(self, vocab_file: str, merge_file: str) -> None:
        try:
            with open(vocab_file, encoding="utf-8") as f:
                self.encoder: dict[str, int] = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{vocab_file}: not a JSON vocabulary ({e})") from None
        self.decoder = {v: k for k, v in self.encoder.items()}
        self.ranks = {pair: i for i, pair in enumerate(read_merges(merge_file))}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self._cache: dict[str, list[int]] = {}
        self._vocab_file = vocab_file

    def _bpe(self, word: str) -> list[str]:
        """Apply the merges to one pre-token (already in the byte alphabet)."""
        symbols = list(word)
        while len(symbols) > 1:
            pairs = {(a, b) for a, b in zip(symbols, symbols[1:])}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols

    def _word_ids(self, word: str) -> list[int]:
        ids = self._cache.get(word)
        if ids is None:
            try:
                ids = [self.encoder[s] for s in self._bpe(word)]
            except KeyError as e:
                raise ValueError(f"{self._vocab_file}: BPE symbol {e.args[0]!r} is not in the "
                                 "vocabulary (vocab and merges files do not match)") from None
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in _PRETOKENIZE.findall(text):
            word = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self._word_ids(word))
        return ids

    def decode(self, ids) -> str:
        chars = "".join(self.decoder[int(i)] for i in ids)
        return bytes(self.byte_decoder[c] for c in chars).decode("utf-8", errors="replace")


class GPT2BPETokenizer(MegatronTokenizer):
    """Megatron's ``GPT2BPETokenizer``: eod is ``<|endoftext|>``."""

    def __init__(self, vocab_file: str, merge_file: str) -> None:
        super().__init__("GPT2 BPE")
        self.tokenizer = GPT2BPE(vocab_file, merge_file)
        if "<|endoftext|>" not in self.tokenizer.encoder:
            raise ValueError(f"{vocab_file}: the vocabulary has no <|endoftext|> token")
        self.eod_id = self.tokenizer.encoder["<|endoftext|>"]
        self._vocab, self._inv_vocab = self.tokenizer.encoder, self.tokenizer.decoder

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def detokenize(self, token_ids) -> str:
        return self.tokenizer.decode(token_ids)

    @property
    def eod(self) -> int:
        return self.eod_id
