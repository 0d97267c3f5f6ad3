"""The Llama recipes run as a user runs them, with no python on PATH:
examples/pretrain_llama_cl_ltd.sh (TinyLlama's shape, CL_seqtru_voc + random-LTD) with
DRY_RUN=1, the whole recipe shrunk on CPU; and examples/mds/'s copy of Megatron-DeepSpeed's
Llama-2 script in its own flag spelling, whose launch PRINT_COMMAND=1 shows and whose
DRY_RUN=1 trains (one CPU rank, on the first recipe's data)."""
from __future__ import annotations

import json
import os
import re
import subprocess

import numpy as np
import pytest

from megatron.checkpointing.whole_model import load_whole
from megatron.data_efficiency.analyzer.index_io import write_metric_index
from megatron.data_efficiency.config import load_config_file
from tests.examples.fresh_clone import no_python_env
from tests.tools.tool_loader import ROOT

MDS_LLAMA = os.path.join(ROOT, "examples", "mds", "pretrain_llama2_distributed_cl_seqtru_voc_ltd.sh")


def _bash(script: str, folder, **env) -> subprocess.CompletedProcess:
    env = {**no_python_env(str(folder)), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(["bash", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def _ok(proc: subprocess.CompletedProcess) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def _llama_checkpoint(folder: str, groups: int) -> dict:
    """The last checkpoint's saved flags, checked to be the Llama shape, no bias anywhere."""
    _, _, config, full = load_whole(folder)
    assert config.model.normalization == "RMSNorm" and config.model.num_query_groups == groups
    assert config.model.swiglu and config.model.untie_embeddings_and_output_weights
    assert config.model.position_embedding_type == "rope" and config.model.add_bias_linear is False
    assert "output_layer.weight" in full and not [k for k in full if k.endswith("bias")]
    return config


def _trained_to_the_planned_end(out: str) -> int:
    steps = int(re.search(r"\[analyzer\] the training run takes (\d+) steps", out).group(1))
    assert f"validation loss at iteration {steps} " in out, out[-3000:]
    return steps


@pytest.fixture(scope="module")
def llama_dry_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama_recipe")
    out = _ok(_bash("examples/pretrain_llama_cl_ltd.sh", folder, DRY_RUN="1",
                    OUT=str(folder / "out")))
    return folder / "out", out


def test_llama_recipe_dry_run_trains_tinyllamas_shape_with_cl_and_random_ltd(llama_dry_run):
    out_dir, out = llama_dry_run
    steps = _trained_to_the_planned_end(out)
    assert steps > 12                     # 12 nominal steps: CL and random-LTD steps are cheaper
    config = _llama_checkpoint(str(out_dir / "checkpoints"), groups=2)
    model = config.model
    assert (model.ffn_hidden_size, model.rotary_base, model.layernorm_epsilon) == \
        (176, 10000.0, 1e-5)
    assert (config.model.hidden_dropout, config.model.attention_dropout) == (0.0, 0.0)
    assert config.data_efficiency.random_ltd.enabled and config.data_efficiency.curriculum.enabled


def test_mds_llama2_script_prints_their_flags_and_writes_their_ds_config(tmp_path):
    index = str(tmp_path / "voc")
    write_metric_index(index, "voc", np.arange(20), None)
    proc = _ok(_bash(MDS_LLAMA, tmp_path, PRINT_COMMAND="1", BASE_PATH=str(tmp_path),
                     CL_1st_SAMPLE_PATH=index, CL_1st_METRIC_PATH=index))
    argv = proc.split("\n")
    assert argv[1:3] == ["-m", "torch.distributed.run"] and argv[3:5] == ["--nproc_per_node", "8"]
    line = " ".join(argv)
    for flags in ("--tensor-model-parallel-size 2 --pipeline-model-parallel-size 2",
                  "--num-layers 24 --hidden-size 2048 --ffn-hidden-size 5504",
                  "--num-attention-heads 16", "--tokenizer-type GPTSentencePieceTokenizer",
                  "--distributed-backend nccl", "--optimizer adam", "--bf16",
                  "--no-query-key-layer-scaling --attention-dropout 0 --hidden-dropout 0 "
                  "--use-rotary-position-embeddings --untie-embeddings-and-output-weights "
                  "--swiglu --normalization rmsnorm --disable-bias-linear "
                  "--num-key-value-heads 4", "--random-ltd --data-efficiency-curriculum-learning",
                  f"--zero-stage=0 --deepspeed_config={tmp_path}/deepspeed.json --deepspeed"):
        assert flags in line, flags
    ds = json.load(open(tmp_path / "deepspeed.json"))
    assert (ds["bf16"], ds["zero_optimization"], ds["train_batch_size"]) == \
        ({"enabled": True}, {"stage": 0}, 32)
    cfg = load_config_file(str(tmp_path / "deepspeed.json"), seq_length=2048)
    ltd, (voc, seqtru) = cfg.random_ltd, cfg.curriculum.metrics
    assert ltd.layer_ids == tuple(range(1, 23)) and ltd.total_steps == 175000   # T_r 70%
    assert (ltd.min_seqlen, ltd.max_seqlen) == (128, 2048)
    assert voc.schedule.total_curriculum_step == seqtru.schedule.total_curriculum_step == 100000    # T_c 40%
    assert (seqtru.schedule.min_difficulty, voc.schedule.min_difficulty) == (80, 1)
    assert voc.index_path == index
    wandb = _bash(MDS_LLAMA, tmp_path, PRINT_COMMAND="1", LOG_TO_WANDB="1",
                  BASE_PATH=str(tmp_path))
    assert wandb.returncode == 2 and "no Weights & Biases logging" in wandb.stderr


def test_mds_llama2_script_trains_shrunk_on_cpu(tmp_path, llama_dry_run):
    """DRY_RUN=1: their flags, bf16 and ZeRO 0 from their ds_config, the curriculum and
    random-LTD from its data_efficiency section, on one CPU rank with gloo."""
    data = llama_dry_run[0]
    out = _ok(_bash(MDS_LLAMA, tmp_path, DRY_RUN="1", BASE_PATH=str(tmp_path / "run"),
                    DATASET_1=str(data / "corpus_text_document"),
                    TOKENIZER_PATH=str(data / "sp.model")))
    steps = _trained_to_the_planned_end(out)
    # the budget is the tokens of their TRAIN_STEPS (12 here); --train-iters only a cap
    assert steps > 12 and f"--train-tokens 12288: {steps} steps under the data-efficiency" in out
    config = _llama_checkpoint(str(tmp_path / "run" / "checkpoints"), groups=2)
    assert config.optimizer.bf16 and config.parallel.distributed_backend == "gloo"
    assert not config.optimizer.use_distributed_optimizer                     # ZeRO stage 0
