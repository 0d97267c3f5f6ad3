"""The study's data: the default corpus, tokenizer and token store (built once, by the
project's tools), and the analyzer index each seed's training samples need."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Callable

from megatron.study.commands import DataSpec, analyzer_metrics, train_samples
from megatron.study.presets import Preset

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_tool(name: str, args: list[str], log: Callable[[str], None]) -> None:
    """Run ``tools/<name>`` with this Python; on failure raise with its output's tail."""
    cmd = [sys.executable, os.path.join(ROOT, "tools", name), *args]
    log(f"  $ {' '.join(cmd[1:])}")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(f"tools/{name} failed (exit {proc.returncode}):\n{tail}")


def default_corpus(preset: Preset, data_dir: str, log: Callable[[str], None]) -> DataSpec:
    """The default corpus (this Python's standard library) as the preset's token store:
    GPT with a SentencePiece BPE tokenizer, BERT with a WordPiece vocabulary and
    sentence-level documents. Each finished file is kept and reused."""
    if preset.corpus_bytes is None:
        raise ValueError(f"preset {preset.name} trains on your data: give --data-path and "
                         "the tokenizer flags")
    os.makedirs(data_dir, exist_ok=True)
    corpus = os.path.join(data_dir, "stdlib.jsonl")
    if not os.path.exists(corpus):
        run_tool("prepare_default_corpus.py", ["--output", corpus + ".part", "--skip-tests",
                                               "--max-bytes", str(preset.corpus_bytes)], log)
        os.replace(corpus + ".part", corpus)
    prefix = os.path.join(data_dir, "stdlib")
    cache = os.path.join(data_dir, "cache")
    if preset.model == "bert":
        vocab = os.path.join(data_dir, "vocab.txt")
        if not os.path.exists(vocab):
            run_tool("build_wordpiece_vocab.py", ["--input", corpus, "--output", vocab,
                                                  "--vocab-size", str(preset.vocab_size)], log)
        tok = ("--tokenizer-type", "BertWordPieceLowerCase", "--vocab-file", vocab)
        store = prefix + "_text_sentence"
        more = ["--split-sentences"]
    else:
        model = os.path.join(data_dir, "stdlib_sp.model")
        if not os.path.exists(model):
            run_tool("train_tokenizer.py", ["--input", corpus, "--model-prefix",
                                            model[:-len(".model")], "--vocab-size",
                                            str(preset.vocab_size)], log)
        tok = ("--tokenizer-type", "GPTSentencePieceTokenizer", "--tokenizer-model", model)
        store = prefix + "_text_document"
        more = ["--append-eod"]
    if not os.path.exists(store + ".idx"):
        run_tool("preprocess_data.py", ["--input", corpus, "--output-prefix", prefix,
                                        *tok, *more, "--workers", "2"], log)
    return DataSpec(store, tok, cache)


def build_index(preset: Preset, data: DataSpec, seed: int, index_dir: str, arms,
                log: Callable[[str], None], samples: int | None = None) -> None:
    """Index the training samples of ``seed`` (the sample order depends on it) by every
    metric ``arms`` need, once: ``tools/analyze_data.py`` resumes or skips finished work.

    ``samples``: the training samples a run asks for (default: the 100% baseline's). The
    index is valid for every run whose request builds the same number of epochs.
    """
    metrics = analyzer_metrics(arms)
    if not metrics or all(os.path.exists(os.path.join(index_dir, m, "meta.json"))
                          for m in metrics):
        return
    bert = ["--model", "bert"] if preset.model == "bert" else []
    run_tool("analyze_data.py", ["--data-path", data.data_path, "--granularity", "sample",
                                 *bert, "--split", preset.split,
                                 "--seq-length", str(preset.seq_length), "--seed", str(seed),
                                 "--train-samples", str(samples or train_samples(preset)),
                                 "--data-cache-path", data.cache_dir, "--metrics", *metrics,
                                 "--save-path", index_dir, "--quiet"], log)
