"""pretrain_bert.py end to end on a slice of the default corpus, and exact resume."""
from __future__ import annotations

import json
import os
import re

import pretrain_bert


def _flags(data: dict, *extra: str, iters: int) -> list[str]:
    return ["--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "2",
            "--seq-length", "32", "--max-position-embeddings", "32",
            "--micro-batch-size", "4", "--global-batch-size", "8", "--train-iters", str(iters),
            "--lr", "3e-3", "--min-lr", "3e-4", "--lr-warmup-iters", "2",
            "--lr-decay-style", "cosine", "--data-path", data["data"],
            "--vocab-file", data["vocab"], "--split", "80,15,5", "--num-workers", "0",
            "--seed", "11", "--data-cache-path", data["dir"], *extra]


def test_loss_falls_and_both_losses_logged(bert_data, capsys):
    state = pretrain_bert.main(_flags(bert_data, "--log-interval", "5", "--eval-interval", "30",
                                      "--eval-iters", "1", iters=30))
    out = capsys.readouterr().out
    assert state.iteration == 30
    assert re.search(r"iteration\s+30/\s+30 .*\| lm loss: \S+ \| sop loss: \S+", out), out[-2000:]
    assert "validation loss at iteration 30 | lm loss value:" in out
    losses = [loss for _, loss in state.history]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.5, (first, last)


def test_no_binary_head_logs_lm_loss_only(bert_data, capsys):
    state = pretrain_bert.main(_flags(bert_data, "--bert-no-binary-head", "--log-interval", "1",
                                      "--eval-iters", "0", iters=2))
    out = capsys.readouterr().out
    assert state.iteration == 2 and "lm loss:" in out and "sop loss" not in out


def test_resume_is_exact(bert_data, tmp_path):
    """6 steps straight == 3 steps, save, a new pretrain() with --load, 3 more (fp32, CPU,
    dropout on: the RNG states and the data position must be restored)."""
    common = ("--log-interval", "1", "--eval-iters", "0")
    straight = pretrain_bert.main(_flags(bert_data, *common, iters=6))
    ckpt = str(tmp_path / "ckpt")
    first = pretrain_bert.main(_flags(bert_data, *common, "--save", ckpt, "--exit-interval", "3",
                                      iters=6))
    assert first.iteration == 3
    resumed = pretrain_bert.main(_flags(bert_data, *common, "--load", ckpt, iters=6))
    assert resumed.iteration == 6 and resumed.consumed_samples == 48
    assert first.history == straight.history[:3]
    assert resumed.history == straight.history[3:]


def test_checkpoint_records_bert_and_converts_as_bert(bert_data, tmp_path):
    """A pretrain_bert.py checkpoint says it is BERT, so tools/checkpoint_util.py rebuilds a
    BERT (heads included) and the converted checkpoint trains on; ``--model-type`` is
    checked against it."""
    import pytest
    import torch

    from megatron.errors import BadConfigError
    from tests.tools.tool_loader import load_tool
    ckpt, out = str(tmp_path / "ckpt"), str(tmp_path / "converted")
    common = ("--log-interval", "1", "--eval-iters", "0")
    pretrain_bert.main(_flags(bert_data, *common, "--save", ckpt, iters=2))
    saved = torch.load(os.path.join(ckpt, "iter_0000002", "mp_rank_00", "model_optim_rng.pt"),
                       map_location="cpu", weights_only=False)
    assert saved["run_config"]["model_type"] == "bert"
    util = load_tool("checkpoint_util")
    with pytest.raises(BadConfigError, match="BERT"):
        util.main(["--model-type", "GPT", "--load-dir", ckpt, "--save-dir", out,
                   "--target-tensor-parallel-size", "1", "--target-pipeline-parallel-size", "1"])
    util.main(["--model-type", "BERT", "--load-dir", ckpt, "--save-dir", out,
               "--target-tensor-parallel-size", "1", "--target-pipeline-parallel-size", "1"])
    converted = torch.load(os.path.join(out, "iter_0000002", "mp_rank_00", "model_optim_rng.pt"),
                           map_location="cpu", weights_only=False)["model"]
    assert converted.keys() == saved["model"].keys()
    for k, v in saved["model"].items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(converted[k], v), k
    state = pretrain_bert.main(_flags(bert_data, *common, "--load", out, "--finetune", iters=3))
    assert state.iteration == 3    # --finetune: loaded, the counters restarted
    # the Hugging Face export reads the recorded type too (it once wrote a GPT-2 for BERT)
    pytest.importorskip("transformers")
    util.main(["--saver", "hf", "--load-dir", ckpt, "--save-dir", str(tmp_path / "hf")])
    config = json.load(open(tmp_path / "hf" / "config.json"))
    assert config["model_type"] == "megatron-bert", config
