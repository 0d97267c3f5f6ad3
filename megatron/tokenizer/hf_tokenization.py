"""Hugging Face tokenizers: ``--tokenizer-type HuggingFaceTokenizer --tokenizer-model PATH``
(Megatron-LM's name; ``HFTokenizer``, Megatron-DeepSpeed's spelling, is the same type).

``PATH`` is local, never a hub name: a tokenizer folder as ``transformers.AutoTokenizer.
from_pretrained`` reads it (``tokenizer.json``, ``tokenizer_config.json``,
``special_tokens_map.json``, ...; loaded with ``local_files_only``, no custom code), or a
bare ``tokenizer.json`` file of the ``tokenizers`` library. A bare file names no special
tokens: BOS / EOS / UNK / PAD are the special tokens it holds under their conventional
names (``<s>`` / ``</s>``, ``<|begin_of_text|>`` / ``<|end_of_text|>``, ...).

As Megatron-LM's ``_HuggingFaceTokenizer``:

* ``tokenize(text)`` is the tokenizer's own encoding, special tokens included
  (``add_special_tokens=True``): a Llama-style tokenizer puts BOS before every text, so
  every document of a token store starts with BOS; ``tokenize_text`` leaves them out.
* ``eod`` = ``eos`` = the EOS id; ``bos``, ``pad`` where the tokenizer has them.
* ``vocab_size`` = ``len(tokenizer)``: the base vocabulary plus its added tokens.
* ``detokenize`` decodes special tokens as their text and does not "clean up" spaces, so
  it inverts ``tokenize``.

``transformers`` (requirements-eval.txt) is imported only when such a tokenizer is built:
the module itself is plain Python, so the identity of a tokenizer folder
(:func:`tokenizer_files`) needs no optional package.
"""
from __future__ import annotations

import json
import os

from megatron.errors import BadConfigError

from .tokenizer import MegatronTokenizer

HF_TYPE = "HuggingFaceTokenizer"
ALIASES = {"HFTokenizer": HF_TYPE}     # Megatron-DeepSpeed's spelling

# The files AutoTokenizer reads from a folder (fast and slow tokenizers): copied by the
# Hugging Face export and hashed into the tokenizer's identity.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "vocab.json", "merges.txt", "vocab.txt",
                   "tokenizer.model")
# --trust-remote-code (Megatron-LM's and Megatron-DeepSpeed's flag, passed to AutoTokenizer
# there) is refused, not ignored: a tokenizer's own Python code is never run here.
REMOTE_CODE_REFUSED = ("--trust-remote-code is not supported: a Hugging Face tokenizer's own "
                       "Python code (auto_map) is never run here; give --tokenizer-model a "
                       "tokenizer that loads without it (a folder with tokenizer.json, or the "
                       "tokenizer.json file itself)")
# Conventional special-token names, for a bare tokenizer.json (first one present wins).
_CONVENTIONAL = {"bos_token": ("<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>"),
                 "eos_token": ("</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"),
                 "unk_token": ("<unk>", "<|unk|>"),
                 "pad_token": ("<pad>", "<|pad|>", "[PAD]")}


def canonical_type(tokenizer_type: str | None) -> str | None:
    """``HuggingFaceTokenizer`` for its Megatron-DeepSpeed spelling; any other name as is."""
    return ALIASES.get(tokenizer_type, tokenizer_type)


def tokenizer_files(path: str) -> dict[str, str]:
    """``{file name: path}`` of the tokenizer files at ``--tokenizer-model PATH``.

    Raises:
        FileNotFoundError: the path does not exist (a hub name is not a local path).
        ValueError: a folder without ``tokenizer.json`` / ``tokenizer_config.json``, or a
            file not named ``*.json``.
    """
    if os.path.isdir(path):
        found = {n: os.path.join(path, n) for n in TOKENIZER_FILES
                 if os.path.isfile(os.path.join(path, n))}
        if not {"tokenizer.json", "tokenizer_config.json"} & set(found):
            raise ValueError(f"--tokenizer-model {path}: not a tokenizer folder (no "
                             "tokenizer.json or tokenizer_config.json)")
        return found
    if os.path.isfile(path):
        if not path.endswith(".json"):
            raise ValueError(f"--tokenizer-model {path}: a Hugging Face tokenizer is a folder "
                             "or a tokenizer.json file")
        return {"tokenizer.json": path}
    raise FileNotFoundError(f"--tokenizer-model {path}: no such local file or folder (a "
                            "tokenizer folder or tokenizer.json; nothing is downloaded)")


def bare_file_special_tokens(tokenizer_json: str) -> dict[str, str]:
    """``{"bos_token": "<s>", ...}``: the conventional names among a tokenizer.json's
    special added tokens (a bare file names none of its own)."""
    try:
        with open(tokenizer_json, encoding="utf-8") as f:
            content = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"--tokenizer-model {tokenizer_json}: not a tokenizer.json "
                         f"({type(e).__name__}: {e})") from None
    if not isinstance(content, dict) or "model" not in content:
        raise ValueError(f"--tokenizer-model {tokenizer_json}: not a tokenizer.json of the "
                         "tokenizers library (it has no \"model\")")
    added = content.get("added_tokens") or []
    special = {t.get("content") for t in added if isinstance(t, dict) and t.get("special")}
    out = {}
    for role, names in _CONVENTIONAL.items():
        name = next((n for n in names if n in special), None)
        if name is not None:
            out[role] = name
    return out


def _transformers():
    try:
        import transformers
    except ImportError:
        raise BadConfigError("--tokenizer-type HuggingFaceTokenizer needs the transformers "
                             "package: pip install -r requirements-eval.txt") from None
    return transformers


def _load(path: str):
    """The transformers tokenizer at ``path`` (a folder or a bare tokenizer.json)."""
    tokenizer_files(path)                  # a clear error for what is not a local tokenizer
    folder = os.path.isdir(path)
    special = {} if folder else bare_file_special_tokens(path)
    transformers = _transformers()
    try:
        if folder:
            return transformers.AutoTokenizer.from_pretrained(
                path, local_files_only=True, trust_remote_code=False)
        return transformers.PreTrainedTokenizerFast(tokenizer_file=path, **special)
    except Exception as e:   # transformers raises OSError, ValueError, KeyError, Exception
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(f"--tokenizer-model {path}: transformers could not load a tokenizer "
                         f"from it ({type(e).__name__}: {reason})") from None


class HuggingFaceTokenizer(MegatronTokenizer):
    """A ``transformers`` tokenizer with Megatron's interface (see the module docstring).

    Args:
        path: ``--tokenizer-model``, a local tokenizer folder or tokenizer.json file.
    """

    def __init__(self, path: str) -> None:
        super().__init__(f"{HF_TYPE} ({path})")
        self.path = path
        self._tokenizer = _load(path)
        self._vocab = dict(self._tokenizer.get_vocab())
        self._inv_vocab = {i: t for t, i in self._vocab.items()}
        with_special, plain = self.tokenize("a"), self.tokenize_text("a")
        at = next((i for i in range(len(with_special) - len(plain) + 1)
                   if with_special[i:i + len(plain)] == plain), 0)
        prefix, suffix = with_special[:at], with_special[at + len(plain):]
        self.adds_bos = self._id("bos_token_id") is not None and prefix[-1:] == [self.bos]
        self.adds_eos = self._id("eos_token_id") is not None and suffix[-1:] == [self.eos]

    def _id(self, attribute: str) -> int | None:
        value = getattr(self._tokenizer, attribute, None)
        return None if value is None else int(value)

    @property
    def vocab_size(self) -> int:
        return len(self._tokenizer)

    def tokenize(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"])

    def tokenize_text(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def detokenize(self, token_ids) -> str:
        return self._tokenizer.decode([int(i) for i in token_ids],
                                      clean_up_tokenization_spaces=False)

    def _special(self, attribute: str, what: str) -> int:
        value = self._id(attribute)
        return self._missing(what) if value is None else value

    @property
    def eod(self) -> int:
        return self._special("eos_token_id", "EOS (its end of document)")

    @property
    def eos(self) -> int:
        return self._special("eos_token_id", "EOS")

    @property
    def bos(self) -> int:
        return self._special("bos_token_id", "BOS")

    @property
    def pad(self) -> int:
        return self._special("pad_token_id", "PAD")
