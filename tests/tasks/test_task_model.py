"""The classifier built from a pretrained BERT of any layout, the refusals, the metrics,
and the command line's one-line errors."""
from __future__ import annotations

import os
import subprocess
import dataclasses
import sys

import numpy as np
import pytest
import torch

from megatron.checkpointing.whole_model import read_run_config
from megatron.errors import BadConfigError, CheckpointError
from megatron.model.classification import Classification
from megatron.run_config import RunConfig
from tasks import main as tasks_main
from tasks.eval_utils import TaskMetric, score
from tasks.finetune_args import check_against_checkpoint
from tasks.finetune_utils import load_pretrained
from tests.tools.tool_loader import load_tool

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def _classifier(saved: RunConfig, full: dict) -> tuple[Classification, RunConfig]:
    config = saved.replace(model=dataclasses.replace(saved.model, use_cpu_initialization=True))
    model = Classification(config.model, num_classes=3)
    load_pretrained([model], dict(full), config)
    return model, config


def test_pretrained_encoder_loads_from_any_layout(glue_env, tmp_path, capsys):
    """The encoder and pooler of a TP1 checkpoint and of its TP2 x PP2 conversion load
    into the classifier identically, equal to the pretrained weights; the head is new."""
    util = load_tool("checkpoint_util")
    util.convert(glue_env["ckpt"], str(tmp_path / "tp2pp2"), 2, 2)
    _, _, saved, full = util.load_whole(glue_env["ckpt"])
    _, _, _, full22 = util.load_whole(str(tmp_path / "tp2pp2"))
    model, _ = _classifier(saved, full)
    model22, _ = _classifier(saved, full22)
    mine, mine22 = model.state_dict(), model22.state_dict()
    assert mine.keys() == mine22.keys()
    for key, value in mine.items():
        assert torch.equal(value, mine22[key]), key
        if not key.startswith("classification_head."):
            assert torch.equal(value, full[key]), key
    assert {k for k in mine if k not in full} == {"classification_head.weight",
                                                 "classification_head.bias"}
    # --bert-no-binary-head checkpoints have no pooler / segment table: started at random
    partial = {k: v for k, v in full.items()
               if not k.startswith(("pooler.", "embedding.tokentype"))}
    _classifier(saved, partial)
    assert "WARNING: embedding.tokentype_embeddings.weight, pooler.bias, pooler.weight not " \
           "in the pretrained checkpoint" in capsys.readouterr().out
    with pytest.raises(CheckpointError, match="does not fit the classifier"):
        _classifier(saved, {k: v for k, v in full.items() if "layers.1." not in k})


def test_checkpoint_must_be_bert_of_the_flags_shape(glue_env):
    _, saved = read_run_config(glue_env["ckpt"])
    check_against_checkpoint(saved, saved, "ckpt")
    deeper = saved.replace(model=dataclasses.replace(saved.model, num_layers=4))
    with pytest.raises(CheckpointError, match=r"--num-layers 4 \(checkpoint: 2\)"):
        check_against_checkpoint(deeper, saved, "ckpt")
    with pytest.raises(CheckpointError, match="holds a GPT model"):
        check_against_checkpoint(saved, saved.replace(model_type="gpt"), "ckpt")


def test_pretraining_and_missing_task_flags_are_refused(glue_env):
    with pytest.raises(BadConfigError, match=r"--train-iters: finetuning runs --epochs(.|\n)*"
                                             r"--random-ltd: curriculum"):
        tasks_main.main(glue_env["flags"]("--train-iters", "10", "--random-ltd"))
    with pytest.raises(BadConfigError, match="--task XNLI: choose one of MNLI, QQP"):
        tasks_main.main(glue_env["flags"]("--task", "XNLI"))
    flags = glue_env["flags"]()
    i = flags.index("--pretrained-checkpoint")
    with pytest.raises(BadConfigError, match="--pretrained-checkpoint is required"):
        tasks_main.main(flags[:i] + flags[i + 2:] + ["--load", glue_env["ckpt"]])


def test_dynamic_batching_is_refused_in_finetuning(glue_env, tmp_path):
    """A task's examples have no analyzer seqlen metric: token-budget batches are refused."""
    import json
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"train_batch_size": 8, "train_micro_batch_size_per_gpu": 4,
                              "data_efficiency": {"enabled": True, "data_sampling": {
                                  "dynamic_batching": {"enabled": True, "max_tokens": 64,
                                                       "metrics_path": "/idx"}}}}))
    with pytest.raises(BadConfigError, match="dynamic_batching .* not supported in finetuning"):
        tasks_main.main(glue_env["flags"]("--deepspeed", "--deepspeed_config", str(ds)))


def test_load_of_a_pretraining_checkpoint_is_refused(glue_env):
    with pytest.raises(CheckpointError, match="not a finetuning run: give a pretrained BERT "
                                              "as --pretrained-checkpoint"):
        tasks_main.main(glue_env["flags"]("--load", glue_env["ckpt"]))


def test_malformed_training_file_is_one_error_line(glue_env, tmp_path):
    bad = tmp_path / "train.tsv"
    bad.write_text("sentence\tlabel\ngood film\t1\nbad film\tnegative\n")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tasks", "main.py"),
                           *glue_env["flags"]("--train-data", str(bad))],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        f"error: {bad}:3: label 'negative' is not one of 0, 1"]


def test_metrics_match_sklearn_and_scipy():
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import f1_score, matthews_corrcoef
    rng = np.random.default_rng(0)
    labels, preds = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
    acc = score(TaskMetric(f1=True), preds, labels)
    assert acc["correct"] == int((preds == labels).sum()) and acc["total"] == 50
    assert acc["f1"] == pytest.approx(100 * f1_score(labels, preds))
    assert score(TaskMetric("mcc"), preds, labels)["mcc"] == pytest.approx(
        matthews_corrcoef(labels, preds))
    x, y = rng.normal(size=30), rng.normal(size=30)
    corr = score(TaskMetric("correlation"), x, y)
    assert corr["pearson"] == pytest.approx(pearsonr(x, y)[0])
    assert corr["spearmanr"] == pytest.approx(spearmanr(x, y)[0])
