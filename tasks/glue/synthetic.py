"""Write a small SST-2-style task whose label a small BERT can learn in a few dozen steps.

    python tasks/glue/synthetic.py --vocab-file vocab.txt --output-dir glue_demo

writes ``glue_demo/SST-2/train.tsv`` and ``dev.tsv`` (``sentence<TAB>label`` with a
header, as GLUE's SST-2). Sentences are 6-12 whole words of the WordPiece vocabulary;
each holds one marker word, one of four "positive" (label 1) or four "negative" (label 0)
words drawn from the vocabulary with the seed; the rest is filler. Chance is 50%.
For checking a setup end to end (``tests/tasks/``, README), not for measuring a model.
"""
from __future__ import annotations

import argparse
import os
import random


def vocabulary_words(vocab_file: str) -> list[str]:
    """Whole lower-case words of a WordPiece ``vocab.txt`` (no ``##`` pieces, no
    ``[SPECIAL]`` tokens, at least three letters), in file order."""
    with open(vocab_file, encoding="utf-8") as f:
        tokens = [line.strip() for line in f]
    return [t for t in tokens if t.isascii() and t.isalpha() and t.islower() and len(t) >= 3]


def sentences(words: list[str], count: int, rng: random.Random,
              markers: tuple[list[str], list[str]]) -> list[tuple[str, int]]:
    """``count`` (sentence, label) pairs, labels balanced by the draw."""
    fillers = [w for w in words if w not in markers[0] + markers[1]]
    out = []
    for _ in range(count):
        label = rng.randrange(2)
        text = rng.sample(fillers, rng.randint(2, 6))
        text.insert(rng.randrange(len(text) + 1), rng.choice(markers[label]))
        out.append((" ".join(text), label))
    return out


def write_task(vocab_file: str, output_dir: str, train: int = 512, dev: int = 128,
               seed: int = 1234) -> str:
    """Write ``SST-2/train.tsv`` and ``SST-2/dev.tsv`` under ``output_dir``; returns the
    task folder."""
    words = vocabulary_words(vocab_file)
    if len(words) < 40:
        raise SystemExit(f"{vocab_file}: {len(words)} whole words, need at least 40")
    rng = random.Random(seed)
    picked = rng.sample(words, 8)
    markers = (picked[:4], picked[4:])   # label 0, label 1
    folder = os.path.join(output_dir, "SST-2")
    os.makedirs(folder, exist_ok=True)
    for name, count in (("train", train), ("dev", dev)):
        rows = sentences(words, count, rng, markers)
        with open(os.path.join(folder, f"{name}.tsv"), "w", encoding="utf-8") as f:
            f.write("sentence\tlabel\n")
            f.writelines(f"{text}\t{label}\n" for text, label in rows)
    return folder


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab-file", required=True, help="a WordPiece vocab.txt")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--train", type=int, default=512, help="training sentences")
    p.add_argument("--dev", type=int, default=128, help="validation sentences")
    p.add_argument("--seed", type=int, default=1234)
    a = p.parse_args(argv)
    folder = write_task(a.vocab_file, a.output_dir, a.train, a.dev, a.seed)
    print(f" > wrote {folder}/train.tsv ({a.train} rows) and dev.tsv ({a.dev} rows)")


if __name__ == "__main__":
    main()
