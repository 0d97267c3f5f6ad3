"""Train a SentencePiece model on the text of a jsonl corpus.

    python tools/train_tokenizer.py --input data/stdlib.jsonl --model-prefix data/stdlib_sp \
        --vocab-size 8000

The settings keep source code intact: identity normalization, whitespace kept as is (no
splitting on or collapsing of spaces), whitespace-only pieces allowed, and byte fallback, so
``decode(encode(text)) == text`` for any UTF-8 text. Use the result with
``--tokenizer-type GPTSentencePieceTokenizer --tokenizer-model data/stdlib_sp.model``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Iterator

# SentencePiece drops training "sentences" longer than max_sentence_length bytes, so documents
# are cut at line ends into pieces of about this many characters.
_CHUNK_CHARS = 2000


def iter_texts(path: str, json_key: str) -> Iterator[str]:
    """Texts of ``json_key`` in a jsonl file; a bad line raises ValueError with its number."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: malformed JSON ({e.msg})") from None
            if not isinstance(doc, dict) or json_key not in doc:
                raise ValueError(f"{path}:{lineno}: no {json_key!r} key")
            yield doc[json_key]


def iter_chunks(texts, chunk_chars: int = _CHUNK_CHARS) -> Iterator[str]:
    """Cut each text at line ends into chunks of at most about ``chunk_chars`` characters."""
    for text in texts:
        buf = ""
        for line in text.splitlines(keepends=True):
            if buf and len(buf) + len(line) > chunk_chars:
                yield buf
                buf = ""
            buf += line[:4 * chunk_chars]  # an absurdly long line is cut, not dropped
        if buf:
            yield buf


def train(input_path: str, model_prefix: str, vocab_size: int, json_key: str = "text",
          model_type: str = "bpe", input_sentence_size: int = 1_000_000,
          character_coverage: float = 1.0, num_threads: int = 1) -> str:
    """Train and write ``{model_prefix}.model`` / ``.vocab`` (via temp names); returns the model path."""
    import sentencepiece as spm

    tmp_prefix = f"{model_prefix}.tmp{os.getpid()}"
    os.makedirs(os.path.dirname(os.path.abspath(model_prefix)), exist_ok=True)
    failure: list[Exception] = []

    def chunks():
        # SentencePiece wraps errors raised by the iterator; keep ours to re-raise it as is.
        try:
            yield from iter_chunks(iter_texts(input_path, json_key))
        except (ValueError, OSError) as e:
            failure.append(e)
            raise
    try:
        _train(spm, chunks(), tmp_prefix, vocab_size, model_type, input_sentence_size,
               character_coverage, num_threads)
    except RuntimeError:
        if failure:
            raise failure[0] from None
        raise
    for ext in (".model", ".vocab"):
        os.replace(tmp_prefix + ext, model_prefix + ext)
    return model_prefix + ".model"


def _train(spm, sentences, prefix: str, vocab_size: int, model_type: str,
           input_sentence_size: int, character_coverage: float, num_threads: int) -> None:
    """The SentencePiece call with the settings that keep code intact (module docstring)."""
    spm.SentencePieceTrainer.train(
        sentence_iterator=sentences,
        model_prefix=prefix, vocab_size=vocab_size, model_type=model_type,
        input_sentence_size=input_sentence_size, shuffle_input_sentence=True,
        character_coverage=character_coverage, byte_fallback=True,
        normalization_rule_name="identity", split_by_whitespace=False,
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        add_dummy_prefix=False, split_digits=True, max_sentence_length=16 * _CHUNK_CHARS,
        num_threads=num_threads, minloglevel=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="jsonl corpus")
    parser.add_argument("--model-prefix", required=True, help="writes PREFIX.model and PREFIX.vocab")
    parser.add_argument("--vocab-size", type=int, required=True)
    parser.add_argument("--json-key", default="text")
    parser.add_argument("--model-type", default="bpe", choices=["bpe", "unigram", "char", "word"])
    parser.add_argument("--input-sentence-size", type=int, default=1_000_000,
                        help="chunks sampled for training (0 = all)")
    parser.add_argument("--character-coverage", type=float, default=1.0)
    parser.add_argument("--num-threads", type=int, default=1)
    args = parser.parse_args(argv)
    if not os.path.isfile(args.input):
        parser.error(f"--input {args.input}: file not found")
    start = time.time()
    print(f"training a {args.model_type} SentencePiece model, vocab {args.vocab_size}, "
          f"on {args.input} ...", flush=True)
    try:
        model = train(args.input, args.model_prefix, args.vocab_size, args.json_key,
                      args.model_type, args.input_sentence_size, args.character_coverage,
                      args.num_threads)
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {model} in {time.time() - start:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
