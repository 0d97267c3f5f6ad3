"""Tokenizers with Megatron's names and flags (``--tokenizer-type``)."""

from __future__ import annotations

from .hf_tokenization import ALIASES, HF_TYPE, HuggingFaceTokenizer, canonical_type
from .tokenizer import MegatronTokenizer

TOKENIZER_TYPES = ("GPT2BPETokenizer", "SentencePieceTokenizer", "GPTSentencePieceTokenizer",
                   "BertWordPieceLowerCase", "BertWordPieceCase", HF_TYPE, *ALIASES)


def _require(value, flag: str, tokenizer_type: str):
    if value is None:
        raise ValueError(f"--tokenizer-type {tokenizer_type} needs {flag}")
    return value


def build_tokenizer(tokenizer_type: str, *, vocab_file: str | None = None,
                    merge_file: str | None = None, tokenizer_model: str | None = None,
                    vocab_extra_ids: int = 0) -> MegatronTokenizer:
    """Build the tokenizer named by ``--tokenizer-type`` from its files.

    Args:
        tokenizer_type: one of ``TOKENIZER_TYPES`` (``HFTokenizer`` is
            ``HuggingFaceTokenizer``).
        vocab_file: ``--vocab-file`` (GPT-2 vocab.json or BERT vocab.txt).
        merge_file: ``--merge-file`` (GPT-2 merges.txt).
        tokenizer_model: ``--tokenizer-model`` (SentencePiece .model; a Hugging Face
            tokenizer folder or tokenizer.json).
        vocab_extra_ids: ``--vocab-extra-ids`` sentinel tokens (BERT / SentencePiece).
    """
    tokenizer_type = canonical_type(tokenizer_type)
    if tokenizer_type == "GPT2BPETokenizer":
        from .gpt2_tokenization import GPT2BPETokenizer
        return GPT2BPETokenizer(_require(vocab_file, "--vocab-file", tokenizer_type),
                                _require(merge_file, "--merge-file", tokenizer_type))
    if tokenizer_type in ("BertWordPieceLowerCase", "BertWordPieceCase"):
        from .bert_tokenization import BertWordPieceTokenizer
        return BertWordPieceTokenizer(_require(vocab_file, "--vocab-file", tokenizer_type),
                                      lower_case=tokenizer_type == "BertWordPieceLowerCase",
                                      vocab_extra_ids=vocab_extra_ids)
    if tokenizer_type == "SentencePieceTokenizer":
        from .sentencepiece_tokenization import SentencePieceTokenizer
        return SentencePieceTokenizer(_require(tokenizer_model, "--tokenizer-model", tokenizer_type),
                                      vocab_extra_ids=vocab_extra_ids)
    if tokenizer_type == "GPTSentencePieceTokenizer":
        from .sentencepiece_tokenization import GPTSentencePieceTokenizer
        return GPTSentencePieceTokenizer(_require(tokenizer_model, "--tokenizer-model", tokenizer_type))
    if tokenizer_type == HF_TYPE:
        if vocab_extra_ids:
            raise ValueError(f"--vocab-extra-ids {vocab_extra_ids} with {HF_TYPE}: add the "
                             "tokens to the Hugging Face tokenizer itself")
        return HuggingFaceTokenizer(_require(tokenizer_model, "--tokenizer-model", tokenizer_type))
    raise ValueError(f"--tokenizer-type {tokenizer_type!r} is not supported; "
                     f"choose one of {', '.join(TOKENIZER_TYPES)}")


def vocab_size_with_padding(orig_vocab_size: int, make_vocab_size_divisible_by: int,
                            tensor_model_parallel_size: int) -> int:
    """Megatron's padded vocabulary: the next multiple of ``divisible_by * tp`` at or above the size."""
    multiple = make_vocab_size_divisible_by * tensor_model_parallel_size
    if multiple <= 0:
        raise ValueError("--make-vocab-size-divisible-by and the tensor parallel size must be positive")
    return -(-orig_vocab_size // multiple) * multiple


__all__ = ["MegatronTokenizer", "TOKENIZER_TYPES", "build_tokenizer", "canonical_type",
           "vocab_size_with_padding"]
