"""Build a BERT WordPiece ``vocab.txt`` from a jsonl corpus.

    python tools/build_wordpiece_vocab.py --input data/stdlib.jsonl --output data/vocab.txt \\
        --vocab-size 8000

A deliberately simple vocabulary, not a trained WordPiece model:

1. the special tokens ``[PAD] [UNK] [CLS] [SEP] [MASK]`` (ids 0..4);
2. every character seen in the corpus, both as a word start ``c`` and as a continuation
   ``##c``, so the greedy longest-match WordPiece split can spell any word (of at most 100
   characters) and nothing becomes ``[UNK]``;
3. the most frequent words (``--lower-case``: after BERT's basic tokenizer, the same
   cleaning, punctuation split and lower-casing as ``BertWordPieceLowerCase``), most
   frequent first (ties in alphabetical order), until ``--vocab-size`` tokens; words seen
   fewer than ``--min-frequency`` times are left out.

Frequent words become single tokens, the rest are spelt as a frequent prefix plus
``##`` characters. The output is identical for identical input, and written to a temp
name and renamed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))

from megatron.tokenizer.bert_tokenization import _MAX_WORD_CHARS, basic_tokenize  # noqa: E402

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def count_words(path: str, json_keys: list[str], lower_case: bool = True,
                max_documents: int | None = None) -> Counter:
    """Word frequencies of the jsonl corpus under BERT's basic tokenizer."""
    counts: Counter = Counter()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if max_documents is not None and lineno > max_documents:
                break
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: malformed JSON ({e.msg})") from e
            for key in json_keys:
                text = doc.get(key) if isinstance(doc, dict) else None
                if not isinstance(text, str):
                    raise ValueError(f"{path}:{lineno}: no string value for json key {key!r}")
                counts.update(basic_tokenize(text, lower_case))
    return counts


def build_vocab(counts: Counter, vocab_size: int, min_frequency: int = 1) -> list[str]:
    """Tokens of the vocabulary in id order (see the module docstring)."""
    chars = sorted({c for word in counts for c in word})
    vocab = list(SPECIAL_TOKENS) + chars + ["##" + c for c in chars]
    if len(vocab) > vocab_size:
        raise ValueError(f"--vocab-size {vocab_size} is too small: the corpus has {len(chars)} "
                         f"distinct characters, which need {len(vocab)} tokens")
    seen = set(vocab)
    frequent = sorted(((n, w) for w, n in counts.items() if n >= min_frequency
                       and len(w) <= _MAX_WORD_CHARS and w not in seen),
                      key=lambda item: (-item[0], item[1]))
    vocab += [w for _, w in frequent[:vocab_size - len(vocab)]]
    return vocab


def write_vocab(tokens: list[str], path: str) -> None:
    """One token per line (id = line number), via a temp file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("".join(t + "\n" for t in tokens))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="jsonl corpus, one JSON document per line")
    p.add_argument("--output", required=True, help="vocab.txt to write")
    p.add_argument("--json-keys", nargs="+", default=["text"])
    p.add_argument("--vocab-size", type=int, default=8000, help="tokens in the vocabulary")
    p.add_argument("--min-frequency", type=int, default=2, help="least count of a whole word")
    p.add_argument("--max-documents", type=int, default=None, help="read only the first N lines")
    p.add_argument("--cased", action="store_true",
                   help="keep case (for BertWordPieceCase); default lower-cases")
    args = p.parse_args(argv)
    if args.vocab_size <= len(SPECIAL_TOKENS):
        p.error(f"--vocab-size must exceed {len(SPECIAL_TOKENS)}")
    if not os.path.isfile(args.input):
        p.error(f"--input {args.input}: no such file")
    try:
        counts = count_words(args.input, args.json_keys, not args.cased, args.max_documents)
        tokens = build_vocab(counts, args.vocab_size, args.min_frequency)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_vocab(tokens, args.output)
    print(f"wrote {len(tokens)} tokens ({sum(counts.values())} words, {len(counts)} distinct) "
          f"to {args.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
