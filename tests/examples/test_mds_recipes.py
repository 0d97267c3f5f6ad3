"""examples/mds: the Megatron-DeepSpeed recipes generate the ds_config their flags point at,
and it is read as this codebase's data-efficiency config (the flags themselves: issue 10,
phase 2)."""
import os
import subprocess

import numpy as np
import pytest

from megatron.data_efficiency.analyzer.index_io import write_metric_index
from megatron.data_efficiency.config import load_config_file

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def _dry_run(script: str, tmp_path, **env) -> list[str]:
    env = {**os.environ, "DRY_RUN": "1", "OUTPUT_HOME": str(tmp_path / "out"), **env}
    out = subprocess.run(["bash", os.path.join(ROOT, "examples", "mds", script)], env=env,
                         check=True, capture_output=True, text=True).stdout
    return out.splitlines()


@pytest.mark.parametrize("script,model,seq", [("pretrain_gpt_1.3B_cl_seqtru_voc_ltd.sh", "gpt", 64),
                                              ("pretrain_bert_336M_cl_seqtru_voc_ltd.sh", "bert", 32)])
def test_generated_ds_config_is_read(tmp_path, script, model, seq):
    index = str(tmp_path / "index" / "voc")
    write_metric_index(index, "voc", np.arange(20), None)
    argv = _dry_run(script, tmp_path, NUM_LAYERS="4", SEQ_LEN=str(seq), GLOBAL_BATCH_SIZE="8",
                    NPROC_PER_NODE="2", LTD_START="16", CL_2nd_MIN="24",
                    CL_1st_SAMPLE_PATH=index, CL_1st_METRIC_PATH=index)
    assert argv[0] == "torchrun" and argv[5].endswith(f"pretrain_{model}.py")
    assert argv[argv.index("--num-layers") + 1] == "4"
    assert argv[argv.index("--micro-batch-size") + 1] == "4"      # 8 / (2 ranks)
    cfg = load_config_file(argv[argv.index("--deepspeed_config") + 1], seq_length=seq)
    assert cfg.enabled and cfg.seed == 1234
    ltd = cfg.random_ltd
    assert ltd.enabled and ltd.layer_ids == (1, 2) and ltd.max_seqlen == seq
    assert ltd.min_seqlen == 16 and ltd.seq_per_step == 16
    voc, seqtru = cfg.curriculum.metrics
    assert (voc.name, voc.difficulty_type, voc.index_path) == ("voc", "percentile", index)
    assert voc.schedule.schedule_type == "fixed_root" and voc.schedule.root_degree == 2
    assert (seqtru.kind, seqtru.schedule.max_difficulty) == ("seqtru", seq)
    assert seqtru.schedule.min_difficulty == 24 and seqtru.schedule.difficulty_step == 8
