"""The tokenizer interface every Megatron tokenizer implements."""

from __future__ import annotations

from abc import ABC, abstractmethod


class MegatronTokenizer(ABC):
    """Base class: text <-> token ids plus the special ids the datasets need.

    A special id that a tokenizer does not define raises ``NotImplementedError`` naming the
    tokenizer, so a dataset that needs e.g. ``[MASK]`` fails loudly instead of using a wrong id.

    Attributes:
        adds_bos, adds_eos: whether ``tokenize`` puts BOS before / EOS after every text
            (a Hugging Face tokenizer's own rule; never for the others).
    """

    adds_bos = False
    adds_eos = False

    def __init__(self, name: str) -> None:
        self.name = name
        self._vocab: dict[str, int] = {}       # filled by the subclass
        self._inv_vocab: dict[int, str] = {}

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can produce (before padding for the model)."""
        return len(self._vocab)

    @property
    def vocab(self) -> dict[str, int]:
        """Token string -> id."""
        return self._vocab

    @property
    def inv_vocab(self) -> dict[int, str]:
        """Id -> token string."""
        return self._inv_vocab

    @abstractmethod
    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text``."""

    def tokenize_text(self, text: str) -> list[int]:
        """Token ids of ``text`` alone, without the special tokens ``tokenize`` adds."""
        return self.tokenize(text)

    def detokenize(self, token_ids) -> str:
        """Text of ``token_ids``."""
        raise NotImplementedError(f"detokenize is not implemented for the {self.name} tokenizer")

    def _missing(self, what: str):
        raise NotImplementedError(f"the {self.name} tokenizer has no {what} token")

    @property
    def cls(self) -> int:
        return self._missing("CLS")

    @property
    def sep(self) -> int:
        return self._missing("SEP")

    @property
    def pad(self) -> int:
        return self._missing("PAD")

    @property
    def eod(self) -> int:
        return self._missing("EOD (end of document)")

    @property
    def mask(self) -> int:
        return self._missing("MASK")

    @property
    def bos(self) -> int:
        return self._missing("BOS")

    @property
    def eos(self) -> int:
        return self._missing("EOS")
