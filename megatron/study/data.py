"""The study's data: the default corpus, tokenizer and token store (built once, by the
project's tools), the pruning arms' reference model and its disjoint slice of the corpus,
and the analyzer index each seed's training samples need."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Callable

from megatron.checkpointing import read_tracker
from megatron.study.commands import (MODEL_METRICS, RANDOM_METRIC_FN, DataSpec,
                                     analyzer_metrics, train_samples, window_metrics)
from megatron.study.presets import Preset
from megatron.study.progress import TrainingProgress

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# Output lines of a tool that are passed on as progress: the analyzer's (per shard, and
# per forward batch of a model metric, with rate and ETA). Training's progress comes from
# its metrics file (``metrics_file`` below), not from its printed log.
_PROGRESS_LINES = ("[analyzer]",)


def run_tool(name: str, argv: list[str], log: Callable[[str], None],
             log_file: str | None = None, metrics_file: str | None = None) -> None:
    """Run ``tools/<name>`` (or a top-level script, ``name`` starting with ``../``) with
    this Python, passing its progress lines to ``log`` as they come (a training script's
    from its ``metrics_file``); on failure raise with its output's tail. ``log_file`` keeps
    the whole output."""
    cmd = [sys.executable, os.path.normpath(os.path.join(ROOT, "tools", name)), *argv]
    log(f"  $ {' '.join(cmd[1:])}")
    output = []
    training = TrainingProgress(metrics_file) if metrics_file else None
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          cwd=ROOT) as proc:
        for line in proc.stdout:
            output.append(line)
            if line.startswith(_PROGRESS_LINES):
                log("    " + line.strip())
            for text in training.poll() if training else ():
                log("    " + text)
    text = "".join(output)
    if log_file is not None:
        with open(log_file, "a") as f:
            f.write(text)
    if proc.returncode != 0:
        raise RuntimeError(f"{os.path.relpath(cmd[1], ROOT)} failed (exit {proc.returncode}):"
                           f"\n{text[-3000:]}")


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


def reference_slice(preset: Preset, data: DataSpec, data_dir: str,
                    log: Callable[[str], None]) -> DataSpec:
    """The reference model's data on the default corpus: the ``reference.corpus_bytes`` of
    documents that follow the study's own in the corpus order (so disjoint from its train
    and validation splits), as a token store of the study's tokenizer. Built once."""
    own = os.path.join(data_dir, "stdlib.jsonl")
    text = os.path.join(data_dir, "reference.jsonl")
    if not os.path.exists(text):
        longer = text + ".longer.part"
        run_tool("prepare_default_corpus.py", [
            "--output", longer, "--skip-tests",
            "--max-bytes", str(preset.corpus_bytes + preset.reference.corpus_bytes)], log)
        with open(own, "rb") as f:
            own_docs = f.readlines()
        with open(longer, "rb") as f:
            docs = f.readlines()
        if docs[:len(own_docs)] != own_docs:   # the slice must not overlap the study's data
            raise RuntimeError(f"{own} is not a prefix of the longer corpus {longer}: was "
                               "it built by another Python or seed? Remove the data folder.")
        if len(docs) == len(own_docs):
            raise ValueError("the default corpus has no documents left for the reference "
                             "model's slice")
        with open(text + ".part", "wb") as f:
            f.writelines(docs[len(own_docs):])
        os.replace(text + ".part", text)
        os.remove(longer)
    prefix = os.path.join(data_dir, "reference")
    store = prefix + "_text_document"
    if not os.path.exists(store + ".idx"):
        run_tool("preprocess_data.py", ["--input", text, "--output-prefix", prefix,
                                        *data.tokenizer_flags, "--append-eod",
                                        "--workers", "2"], log)
    return DataSpec(store, data.tokenizer_flags, data.cache_dir)


def train_reference(preset: Preset, ref_data: DataSpec, out_dir: str, seed: int,
                    log: Callable[[str], None]) -> str:
    """Train the preset's reference model on ``ref_data`` once (at the preset's sequence
    length, batch, learning rate and extra flags; all of ``ref_data`` is training data);
    returns its checkpoint folder, which the analyzer loads to score samples."""
    r = preset.reference
    ckpt = os.path.join(out_dir, "checkpoints")
    if read_tracker(ckpt) == r.train_iters:
        return ckpt
    os.makedirs(out_dir, exist_ok=True)
    p = preset
    run_tool("../pretrain_gpt.py", [
        "--num-layers", str(r.num_layers), "--hidden-size", str(r.hidden_size),
        "--num-attention-heads", str(r.num_attention_heads),
        "--seq-length", str(p.seq_length), "--max-position-embeddings", str(p.seq_length),
        "--micro-batch-size", str(p.micro_batch_size),
        "--global-batch-size", str(p.global_batch_size),
        "--train-iters", str(r.train_iters), "--lr", str(p.lr), "--min-lr", str(p.min_lr),
        "--lr-decay-style", "cosine", "--lr-warmup-iters", str(max(1, r.train_iters // 20)),
        "--seed", str(seed), "--data-path", ref_data.data_path, "--split", "100,0,0",
        "--data-cache-path", ref_data.cache_dir, *ref_data.tokenizer_flags,
        "--eval-iters", "0", "--log-interval", str(p.log_interval),
        "--metrics-file", os.path.join(out_dir, "metrics.jsonl"),
        "--save", ckpt, "--load", ckpt, "--save-interval", str(r.train_iters), *p.extra],
        log, log_file=os.path.join(out_dir, "train.log"),
        metrics_file=os.path.join(out_dir, "metrics.jsonl"))
    return ckpt


def build_index(preset: Preset, data: DataSpec, seed: int, index_dir: str, arms,
                log: Callable[[str], None], samples: int | None = None,
                reference: str | None = None) -> None:
    """Index the training samples of ``seed`` (the sample order depends on it) by every
    metric ``arms`` need, once: ``tools/analyze_data.py`` resumes or skips finished work.

    ``samples``: the training samples a run asks for (default: the 100% baseline's). The
    index is valid for every run whose request builds the same number of epochs.
    ``reference``: the reference model's checkpoint, for the pruning arms' ``ppl``.
    """
    windows = window_metrics(arms)
    metrics = analyzer_metrics(arms) + [m for m in windows if m in MODEL_METRICS]
    fns = [RANDOM_METRIC_FN] if "random" in windows else []
    if all(os.path.exists(os.path.join(index_dir, m, "meta.json"))
           for m in metrics + [f.split("=")[0] for f in fns]):
        return
    model = []
    if any(m in MODEL_METRICS for m in metrics):
        if reference is None:
            raise ValueError(f"the {', '.join(windows)} index needs the reference model")
        model = ["--reference-load", reference]
    bert = ["--model", "bert"] if preset.model == "bert" else []
    run_tool("analyze_data.py", ["--data-path", data.data_path, "--granularity", "sample",
                                 *bert, "--split", preset.split,
                                 "--seq-length", str(preset.seq_length), "--seed", str(seed),
                                 "--train-samples", str(samples or train_samples(preset)),
                                 "--data-cache-path", data.cache_dir,
                                 *(["--metrics", *metrics] if metrics else []),
                                 *(["--metric-fn", *fns] if fns else []), *model,
                                 "--save-path", index_dir], log)
