"""tasks/main.py end to end on a generated SST-2-style task: it learns, it is exactly
reproducible, a resumed run is the uninterrupted run, and data / pipeline parallel runs
give the single-process scores."""
from __future__ import annotations

import json
import os
import re

import pytest

from tasks import main as tasks_main
from tests.dist_utils import run_distributed


@pytest.fixture(scope="module")
def straight(glue_env, tmp_path_factory):
    """Two epochs with the defaults (dropout, --num-workers 2), saved; results and log."""
    save = str(tmp_path_factory.mktemp("ft") / "run")
    results = tasks_main.main(glue_env["flags"]("--save", save))
    return results, save


def test_learns_the_task_and_reports_like_megatron(straight, capfd):
    results, save = straight
    final = results["final"]["metrics"]
    assert final["dev"]["total"] == 128 and final["overall"] == final["dev"]
    assert final["dev"]["accuracy"] >= 85.0, results["evaluations"]   # chance: 50 %
    assert [e["epoch"] for e in results["evaluations"]] == [0, 1]
    assert [e["iteration"] for e in results["evaluations"]] == [32, 64]
    assert [v["iteration"] for v in results["validation_losses"]] == [16, 32, 48, 64]
    with open(os.path.join(save, "results.json")) as f:
        assert json.load(f) == json.loads(json.dumps(results))
    assert results["train_iters"] == 64 and results["best"]["metrics"]["overall"][
        "accuracy"] >= final["overall"]["accuracy"]
    assert sorted(os.listdir(save)) == ["iter_0000032", "iter_0000064",
                                        "latest_checkpointed_iteration.txt", "results.json"]


def test_megatron_deepspeed_script_options_and_metric_lines(glue_env, tmp_path, capsys):
    """The options of Megatron-DeepSpeed's data_efficiency/bert/finetune scripts (their
    DeepSpeed config, which has no data-efficiency section) with --epochs 0 (score only);
    the lines parse as their ds_finetune_gather_result.py reads them (the number 9 words
    after 'overall:' / 'metrics for NAME:')."""
    ds_config = tmp_path / "ds_config_bert_bsz8_mbsz4_log16_zero0.json"
    ds_config.write_text(json.dumps({
        "train_batch_size": 8, "train_micro_batch_size_per_gpu": 4, "steps_per_print": 16,
        "zero_optimization": {"stage": 0}, "gradient_clipping": 1.0,
        "prescale_gradients": True, "wall_clock_breakdown": False,
        "fp16": {"enabled": True, "loss_scale": 0, "loss_scale_window": 500,
                 "hysteresis": 2, "min_loss_scale": 1, "initial_scale_power": 11}}))
    tasks_main.main(glue_env["flags"](
        "--finetune", "--deepspeed", "--deepspeed_config", str(ds_config), "--zero-stage", "0",
        "--seed", "1234", "--tokenizer-type", "BertWordPieceLowerCase",
        "--tensor-model-parallel-size", "1", "--pipeline-model-parallel-size", "1",
        "--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "2",
        "--seq-length", "32", "--max-position-embeddings", "32", "--save-interval", "500000",
        "--weight-decay", "1.0e-1", "--fp16", "--checkpoint-activations",
        "--deepspeed-activation-checkpointing", "--no-pipeline-parallel",
        "--eval-iters", "0", epochs=0))
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "metrics for dev:" in x)
    assert re.fullmatch(r" > \|epoch: -1\| metrics for dev: correct / total = \d+ / 128 = "
                        r"\d+\.\d{4} %, elapsed time \(sec\): \d+\.\d{3}", line), line
    words = line.split(" ")
    assert words[words.index("dev:") + 9] == line.split(" = ")[2].split(" ")[0]
    overall = next(x for x in out.splitlines() if "overall:" in x).split(" ")
    assert overall[overall.index("overall:") + 9] == words[words.index("dev:") + 9]


def test_finetuning_checkpoint_is_not_converted_as_a_bert(straight, tmp_path):
    """tools/checkpoint_util.py rebuilds GPT and BERT pretraining models only: a
    finetuning checkpoint (model_type bert_classification) is refused by name."""
    from megatron.errors import BadConfigError
    from tests.tools.tool_loader import load_tool
    with pytest.raises(BadConfigError, match="holds a 'bert_classification' model"):
        load_tool("checkpoint_util").main(
            ["--load-dir", straight[1], "--save-dir", str(tmp_path / "out"),
             "--target-tensor-parallel-size", "1", "--target-pipeline-parallel-size", "1"])
    assert not (tmp_path / "out").exists()


def test_same_seed_same_scores(straight, glue_env):
    again = tasks_main.main(glue_env["flags"]())
    assert again["evaluations"] == straight[0]["evaluations"]
    assert again["validation_losses"] == straight[0]["validation_losses"]


def test_resume_is_exact(straight, glue_env, tmp_path):
    """Stopped mid-epoch 2 (--exit-interval 40) and resumed with --load: the scores and
    validation losses of the uninterrupted run, bit for bit."""
    save = str(tmp_path / "run")
    first = tasks_main.main(glue_env["flags"]("--save", save, "--exit-interval", "40"))
    assert [e["epoch"] for e in first["evaluations"]] == [0]
    resumed = tasks_main.main(glue_env["flags"]("--save", save, "--load", save))
    assert resumed["evaluations"] == straight[0]["evaluations"]
    assert resumed["validation_losses"] == straight[0]["validation_losses"]


_EXACT = ("--hidden-dropout", "0", "--attention-dropout", "0", "--use-cpu-initialization",
          "--num-workers", "0")


def _layouts_worker(rank: int, world_size: int, flags: list[str]) -> list:
    out = []
    for layout in (["--micro-batch-size", "4"],   # DP2: one micro-batch of 4 per rank
                   ["--pipeline-model-parallel-size", "2", "--micro-batch-size", "2"],
                   ["--tensor-model-parallel-size", "2"]):
        out.append(tasks_main.main([*flags, *layout]))
    return out


def test_data_tensor_and_pipeline_parallel_give_the_single_process_scores(glue_env):
    """Without dropout and with layout-independent initialisation, DP2, PP2 (4
    micro-batches, 1F1B) and TP2 runs train the same model as one process."""
    dev = os.path.join(glue_env["task"], "dev.tsv")   # 128 examples: 16 steps
    flags = glue_env["flags"](*_EXACT, "--train-data", dev, "--eval-interval", "8",
                              "--eval-iters", "1", epochs=1)
    reference = tasks_main.main(flags)
    per_rank = run_distributed(_layouts_worker, 2, flags, timeout_s=300)
    for run in per_rank[1]:            # the last rank holds the results
        assert run["evaluations"] == reference["evaluations"]
        for got, want in zip(run["validation_losses"], reference["validation_losses"]):
            assert got == pytest.approx(want, rel=1e-5)
    assert per_rank[0] == [None, None, None]
