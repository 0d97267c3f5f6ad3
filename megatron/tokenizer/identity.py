"""What identifies a tokenizer, as plain data: recorded with every token store and every
checkpoint, and compared wherever ids from one meet a model or tokenizer of the other.

``tokenizer_identity`` returns a JSON-able dict::

    {"type": "GPT2BPETokenizer", "vocab_size": 50257,
     "files": {"vocab_file": "<sha256>", "merge_file": "<sha256>"},
     "special_ids": {"eod": 50256}, "vocab_extra_ids": 0}

File paths are not part of it (a copied tokenizer is the same tokenizer); the sha256 of
each file the type reads is. A Hugging Face tokenizer (``HuggingFaceTokenizer``, also for
its alias ``HFTokenizer``) records each tokenizer file of its folder by file name
(``{"tokenizer.json": ..., "tokenizer_config.json": ...}``; a bare tokenizer.json as
``tokenizer.json``). ``NullTokenizer`` (``--vocab-size`` without a tokenizer) has
no files: its ids mean whatever the data means, so only their range is checked.
"""
from __future__ import annotations

import hashlib

from .hf_tokenization import HF_TYPE, canonical_type, tokenizer_files

# The files each --tokenizer-type reads (the only ones hashed).
_FILES_OF = {"GPT2BPETokenizer": ("vocab_file", "merge_file"),
             "BertWordPieceLowerCase": ("vocab_file",), "BertWordPieceCase": ("vocab_file",),
             "SentencePieceTokenizer": ("tokenizer_model",),
             "GPTSentencePieceTokenizer": ("tokenizer_model",)}
_SPECIALS = ("eod", "pad", "cls", "sep", "mask", "bos", "eos")
NULL_TYPE = "NullTokenizer"


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tokenizer_identity(tokenizer_type: str, tokenizer, *, vocab_file: str | None = None,
                       merge_file: str | None = None, tokenizer_model: str | None = None,
                       vocab_extra_ids: int = 0) -> dict:
    """The identity of ``tokenizer``, built from ``--tokenizer-type`` and its files.

    Args:
        tokenizer_type: the ``--tokenizer-type`` name (``NullTokenizer`` for none).
        tokenizer: the built tokenizer (``vocab_size`` and its special ids are read).
        vocab_file, merge_file, tokenizer_model, vocab_extra_ids: its flags.
    """
    tokenizer_type = canonical_type(tokenizer_type)
    given = {"vocab_file": vocab_file, "merge_file": merge_file,
             "tokenizer_model": tokenizer_model}
    if tokenizer_type == HF_TYPE:
        files = tokenizer_files(tokenizer_model) if tokenizer_model else {}
    else:
        files = {role: given[role] for role in _FILES_OF.get(tokenizer_type, ()) if given[role]}
    specials = {}
    for name in _SPECIALS:
        try:
            value = getattr(tokenizer, name)
        except (NotImplementedError, AttributeError, KeyError):
            continue
        if value is not None:
            specials[name] = int(value)
    return {"type": tokenizer_type, "vocab_size": int(tokenizer.vocab_size),
            "files": {role: file_sha256(path) for role, path in files.items()},
            "special_ids": specials, "vocab_extra_ids": int(vocab_extra_ids or 0)}


def _short_role(role: str) -> str:
    """``vocab`` / ``merge`` / ``model`` for our flags; a file name as it is."""
    return role if "." in role else role.replace("_file", "").replace("tokenizer_", "")


def describe(identity: dict) -> str:
    """``TYPE (vocab N, model 1a2b3c4d...)`` for messages."""
    if identity.get("type") == NULL_TYPE:
        return f"--vocab-size {identity.get('vocab_size')} (no tokenizer)"
    files = ", ".join(f"{_short_role(role)} {digest[:8]}"
                      for role, digest in sorted(identity.get("files", {}).items()))
    return f"{identity.get('type')} (vocab {identity.get('vocab_size')}" + \
        (f", {files})" if files else ")")


def identity_differences(recorded: dict, current: dict) -> list[str]:
    """What differs between two identities, one ``key: recorded -> current`` each (empty:
    the same tokenizer). ``NullTokenizer`` ids mean whatever the data means: against it
    nothing differs (the caller checks that the ids are in its range)."""
    if NULL_TYPE in (current.get("type"), recorded.get("type")):
        return []
    out = []
    for key in ("type", "vocab_size", "vocab_extra_ids"):
        if recorded.get(key) != current.get(key):
            out.append(f"{key}: {recorded.get(key)} -> {current.get(key)}")
    for group in ("files", "special_ids"):
        old, new = recorded.get(group, {}), current.get(group, {})
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                out.append(f"{group[:-1]} {name}: {old.get(name)} -> {new.get(name)}")
    return out
