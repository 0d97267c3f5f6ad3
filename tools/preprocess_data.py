"""Tokenize a jsonl corpus into Megatron's mmap ``.bin``/``.idx`` token store.

    python tools/preprocess_data.py --input data/stdlib.jsonl --output-prefix data/stdlib \
        --tokenizer-type GPTSentencePieceTokenizer --tokenizer-model data/stdlib_sp.model \
        --append-eod --workers 4

writes ``data/stdlib_text_document.bin/.idx`` (one sequence per document) and its record
``data/stdlib_text_document.tokenizer.json`` (the tokenizer's identity and the largest id:
see megatron/data/provenance.py). With
``--split-sentences`` (BERT data) each sentence is a sequence, documents are groups of them,
and the files are named ``{prefix}_{key}_sentence.bin/.idx`` as in Megatron-LM.

A Hugging Face tokenizer (``--tokenizer-type HuggingFaceTokenizer --tokenizer-model DIR``)
encodes each document (each sentence, with ``--split-sentences``) with its own special
tokens, as Megatron-LM does: a Llama-style tokenizer starts every one with BOS, and
``--append-eod`` ends the document with EOS (not a second time where the tokenizer's own
rule already ends every text with EOS).

Sentence splitting (no NLTK needed): a sentence ends at ``.``, ``!`` or ``?`` (plus any closing
quotes/brackets) followed by whitespace and an upper-case letter, digit or opening quote, unless
the word before the period is a common abbreviation (Mr., e.g., ...); a blank line always ends
a sentence. With ``--keep-newlines`` the newlines inside sentences are kept, otherwise each
sentence's whitespace runs are collapsed to one space.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time

import regex

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))

from megatron.data.indexed_dataset import (  # noqa: E402
    MMapIndexedDatasetBuilder, best_fitting_dtype, data_file_path, index_file_path)
from megatron.data import provenance  # noqa: E402
from megatron.tokenizer import TOKENIZER_TYPES, build_tokenizer  # noqa: E402
from megatron.tokenizer.identity import tokenizer_identity  # noqa: E402
from megatron.tokenizer.hf_tokenization import REMOTE_CODE_REFUSED  # noqa: E402

_BOUNDARY = regex.compile(r"""[.!?]["')\]]*\s+(?=["'(\[]?[\p{Lu}\p{N}])|\n[ \t]*\n\s*""")
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "st", "vs", "etc", "e.g", "i.e", "no",
                  "fig", "jr", "sr", "inc", "ltd", "co", "cf", "al"}


def split_sentences(text: str, keep_newlines: bool = False) -> list[str]:
    """Split prose into sentences with the rule in the module docstring."""
    sentences, start = [], 0
    for m in _BOUNDARY.finditer(text):
        if text[m.start()] == ".":
            word = regex.search(r"(\S+)$", text[start:m.start()])
            if word and word.group(1).lower().lstrip("(\"'") in _ABBREVIATIONS:
                continue
        end = m.start() + len(m.group().rstrip())
        sentences.append(text[start:end])
        start = m.end()
    sentences.append(text[start:])
    if not keep_newlines:
        sentences = [" ".join(s.split()) for s in sentences]
    return [s.strip() for s in sentences if s.strip()]


class Encoder:
    """Turns one jsonl line into token ids.

    The tokenizer is a class attribute set by ``initializer`` in each worker process, because the
    pool pickles ``encode``'s instance for every task and the tokenizer should not travel along.
    """

    tokenizer = None

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def initializer(self) -> None:
        Encoder.tokenizer = build_tokenizer(
            self.args.tokenizer_type, vocab_file=self.args.vocab_file,
            merge_file=self.args.merge_file, tokenizer_model=self.args.tokenizer_model,
            vocab_extra_ids=self.args.vocab_extra_ids)

    def encode(self, numbered_line: tuple[int, bytes]):
        """Returns ``(lineno, {key: [sentence ids, ...]}, nbytes)`` or ``(lineno, error, nbytes)``."""
        lineno, raw = numbered_line
        nbytes = len(raw)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            return lineno, f"not UTF-8 ({e.reason} at byte {e.start})", nbytes
        if not line.strip():
            return lineno, {}, nbytes
        text = line.rstrip("\r\n")   # else an error at the end points past the newline
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            where = f"column {e.colno}"
            if e.pos >= len(text.rstrip()):
                where += " (the end of the line: is it cut short?)"
            return lineno, f"malformed JSON at {where}: {e.msg}", nbytes
        out = {}
        for key in self.args.json_keys:
            if not isinstance(doc, dict) or not isinstance(doc.get(key), str):
                return lineno, f"no string value for json key {key!r}", nbytes
            text = doc[key]
            parts = split_sentences(text, self.args.keep_newlines) if self.args.split_sentences \
                else [text]
            sentences = [ids for ids in map(Encoder.tokenizer.tokenize, parts) if ids]
            if sentences and self.args.append_eod and not Encoder.tokenizer.adds_eos:
                sentences[-1].append(Encoder.tokenizer.eod)
            out[key] = sentences
        return lineno, out, nbytes


def output_prefix(args: argparse.Namespace, key: str) -> str:
    level = "sentence" if args.split_sentences else "document"
    return f"{args.output_prefix}_{key}_{level}"


class _Progress:
    def __init__(self, interval: int) -> None:
        self.interval, self.start, self.docs, self.bytes = interval, time.time(), 0, 0

    def update(self, nbytes: int) -> None:
        self.docs += 1
        self.bytes += nbytes
        if self.interval > 0 and self.docs % self.interval == 0:
            elapsed = max(time.time() - self.start, 1e-9)
            print(f"Processed {self.docs} documents ({self.docs / elapsed:.1f} docs/s, "
                  f"{self.bytes / elapsed / 1e6:.2f} MB/s).", file=sys.stderr, flush=True)


def _encoded_stream(args: argparse.Namespace, encoder: Encoder, fin):
    """Encoded lines in input order, from a worker pool or (one worker) this process."""
    lines = enumerate(fin, 1)
    if args.workers <= 1:  # the tokenizer built by preprocess() is already in place
        yield from map(encoder.encode, lines)
        return
    with multiprocessing.Pool(args.workers, initializer=encoder.initializer) as pool:
        yield from pool.imap(encoder.encode, lines, args.chunk_size)


def preprocess(args: argparse.Namespace) -> dict:
    """Run the whole conversion; returns the summary. Raises ValueError on bad input."""
    Encoder(args).initializer()  # fail fast on bad tokenizer flags, and size the dtype
    if args.append_eod:
        try:
            Encoder.tokenizer.eod
        except NotImplementedError as e:
            raise ValueError(f"--append-eod: {e}") from None
    dtype = best_fitting_dtype(Encoder.tokenizer.vocab_size)
    identity = tokenizer_identity(args.tokenizer_type, Encoder.tokenizer,
                                  vocab_file=args.vocab_file, merge_file=args.merge_file,
                                  tokenizer_model=args.tokenizer_model,
                                  vocab_extra_ids=args.vocab_extra_ids)
    for key in args.json_keys:   # an old record must not outlive the store it described
        provenance.remove_record(output_prefix(args, key))
    builders = {k: MMapIndexedDatasetBuilder(data_file_path(output_prefix(args, k)), dtype=dtype)
                for k in args.json_keys}
    progress = _Progress(args.log_interval)
    stats = {"documents": 0, "empty_skipped": {k: 0 for k in args.json_keys},
             "tokens": {k: 0 for k in args.json_keys}, "max_id": {k: -1 for k in args.json_keys},
             "sequences": {k: 0 for k in args.json_keys},
             "stored_documents": {k: 0 for k in args.json_keys}}
    stream = None
    try:
        with open(args.input, "rb") as fin:  # bytes: a bad encoding is reported by line
            stream = _encoded_stream(args, Encoder(args), fin)
            for lineno, result, nbytes in stream:
                if isinstance(result, str):
                    raise ValueError(f"{args.input}:{lineno}: {result}")
                if not result:
                    continue  # blank line
                progress.update(nbytes)
                stats["documents"] += 1
                for key, sentences in result.items():
                    if not sentences:
                        stats["empty_skipped"][key] += 1
                        continue
                    lengths = [len(s) for s in sentences]
                    builders[key].add_document([t for s in sentences for t in s], lengths)
                    stats["tokens"][key] += sum(lengths)
                    stats["sequences"][key] += len(lengths)
                    stats["stored_documents"][key] += 1
                    stats["max_id"][key] = max(stats["max_id"][key], max(map(max, sentences)))
        if stats["documents"] == 0:
            raise ValueError(f"{args.input}: no documents (the file is empty or holds only "
                             "blank lines); nothing written")
        empty = [k for k in args.json_keys if stats["tokens"][k] == 0]
        if empty:
            raise ValueError(f"{args.input}: all {stats['documents']} documents are empty for "
                             f"json key(s) {empty} (no tokens); nothing written")
        for key, builder in builders.items():
            builder.finalize(index_file_path(output_prefix(args, key)))
            provenance.write_record(output_prefix(args, key), identity, stats["max_id"][key],
                                    stats["sequences"][key], stats["stored_documents"][key])
    except BaseException:
        if stream is not None:
            stream.close()  # stops the worker pool now, not at garbage collection
        for builder in builders.values():
            builder.abort()
        raise
    elapsed = max(time.time() - progress.start, 1e-9)
    stats.update(seconds=elapsed, mb=progress.bytes / 1e6, dtype=str(dtype),
                 outputs=[output_prefix(args, k) for k in args.json_keys])
    return stats


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_argument_group("input data")
    g.add_argument("--input", required=True, help="jsonl file, one JSON document per line")
    g.add_argument("--json-keys", nargs="+", default=["text"], help="keys to extract")
    g.add_argument("--split-sentences", action="store_true", help="one sequence per sentence")
    g.add_argument("--keep-newlines", action="store_true", help="keep newlines inside sentences")
    g = p.add_argument_group("tokenizer")
    g.add_argument("--tokenizer-type", required=True, choices=TOKENIZER_TYPES)
    g.add_argument("--vocab-file", default=None)
    g.add_argument("--merge-file", default=None)
    g.add_argument("--tokenizer-model", default=None,
                   help="SentencePiece .model; for HuggingFaceTokenizer (alias HFTokenizer) a "
                        "local tokenizer folder or tokenizer.json")
    g.add_argument("--vocab-extra-ids", type=int, default=0)
    g.add_argument("--trust-remote-code", action="store_true",
                   help="refused: a Hugging Face tokenizer's own code is never run here")
    g.add_argument("--append-eod", action="store_true",
                   help="append the eod id to each document (a Hugging Face tokenizer that "
                        "ends every text with EOS itself gets no second one)")
    g.add_argument("--lang", default="english", help="accepted for compatibility; unused")
    g = p.add_argument_group("output data")
    g.add_argument("--output-prefix", required=True)
    g.add_argument("--dataset-impl", default="mmap", choices=["mmap"])
    g = p.add_argument_group("runtime")
    g.add_argument("--workers", type=int, default=1, help="tokenizer processes")
    g.add_argument("--chunk-size", type=int, default=25, help="lines per worker task")
    g.add_argument("--log-interval", type=int, default=1000, help="documents between progress lines")
    args = p.parse_args(argv)
    if os.path.isdir(args.input):
        p.error(f"--input {args.input}: is a directory, not a jsonl file")
    if not os.path.isfile(args.input):
        p.error(f"--input {args.input}: file not found")
    if args.trust_remote_code:
        p.error(REMOTE_CODE_REFUSED)
    if args.workers < 1 or args.chunk_size < 1:
        p.error("--workers and --chunk-size must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = get_args(argv)
    try:
        s = preprocess(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    skipped = sum(s["empty_skipped"].values())
    print(f"Done: {s['documents']} documents, {s['mb']:.2f} MB in {s['seconds']:.1f}s "
          f"({s['documents'] / s['seconds']:.1f} docs/s, {s['mb'] / s['seconds']:.2f} MB/s); "
          f"{skipped} empty documents skipped; tokens "
          + ", ".join(f"{k}={v}" for k, v in s["tokens"].items())
          + f"; dtype {s['dtype']}; wrote " + ", ".join(o + ".bin/.idx" for o in s["outputs"]),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
