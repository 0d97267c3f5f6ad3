"""A tiny GPT on a slice of the real default corpus (the standard library), data built
with the project's own tools: the training loss falls and validation runs."""
import os
import subprocess
import sys

import pytest

from megatron.core.enums import ModelType
import pretrain_gpt
from megatron.training import pretrain

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tool(name, *args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", name), *args], check=True,
                   env=env, capture_output=True, text=True)


@pytest.mark.slow
def test_loss_falls_on_stdlib_slice(tmp_path, capsys):
    corpus, sp = str(tmp_path / "corpus.jsonl"), str(tmp_path / "sp")
    _tool("prepare_default_corpus.py", "--output", corpus, "--max-files", "40", "--skip-tests")
    _tool("train_tokenizer.py", "--input", corpus, "--model-prefix", sp, "--vocab-size", "500")
    _tool("preprocess_data.py", "--input", corpus, "--output-prefix", str(tmp_path / "corpus"),
          "--tokenizer-type", "GPTSentencePieceTokenizer", "--tokenizer-model", sp + ".model",
          "--append-eod", "--workers", "1")
    flags = ["--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4",
             "--seq-length", "64", "--max-position-embeddings", "64",
             "--position-embedding-type", "rope", "--micro-batch-size", "8",
             "--global-batch-size", "8", "--train-iters", "40", "--lr", "5e-3",
             "--min-lr", "5e-4", "--lr-warmup-iters", "4", "--lr-decay-style", "cosine",
             "--hidden-dropout", "0", "--attention-dropout", "0",
             "--data-path", str(tmp_path / "corpus_text_document"), "--split", "95,5,0",
             "--tokenizer-type", "GPTSentencePieceTokenizer", "--tokenizer-model", sp + ".model",
             "--data-cache-path", str(tmp_path / "cache"), "--num-workers", "0",
             "--log-interval", "10", "--eval-interval", "20", "--eval-iters", "2"]
    state = pretrain(pretrain_gpt.train_valid_test_datasets_provider,
                     pretrain_gpt.model_provider, ModelType.encoder_or_decoder, pretrain_gpt.forward_step, argv=flags)
    losses = [loss for _, loss in state.history]
    assert len(losses) == 40
    first, last = losses[0], sum(losses[-5:]) / 5
    assert first > 5.5                   # about ln(512) at the start
    assert last < first - 1.0, (first, last)
    assert state.last_validation["lm loss"] < first - 0.8, state.last_validation
    assert "validation loss at iteration 40" in capsys.readouterr().out
    # Separate train / valid stores instead of --data-path with --split.
    prefix = str(tmp_path / "corpus_text_document")
    i = flags.index("--data-path")
    flags[i:i + 4] = ["--train-data-path", prefix, "--valid-data-path", prefix]
    flags[flags.index("--train-iters") + 1] = "2"
    flags[flags.index("--lr-warmup-iters") + 1] = "1"
    state = pretrain(pretrain_gpt.train_valid_test_datasets_provider,
                     pretrain_gpt.model_provider, ModelType.encoder_or_decoder, pretrain_gpt.forward_step, argv=flags)
    assert state.iteration == 2 and state.last_validation["lm loss"] > 0
