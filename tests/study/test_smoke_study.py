"""tools/data_efficiency_study.py --preset smoke end to end: every arm of Table 2 and the
pruning arms as real pretrain_gpt.py runs on the default corpus; outputs, skipping finished
runs, resuming an interrupted one; and one real (tiny) search of
tools/tune_data_efficiency.py."""
from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest

from megatron.study.presets import get_preset
from tests.tools.tool_loader import load_tool

FIELDS = {"arm", "budget_fraction", "seed", "consumed_tokens", "train_seconds", "val_loss",
          "val_ppl", "val_accuracy"}


@pytest.fixture(scope="module")
def study():
    return load_tool("data_efficiency_study")


@pytest.fixture(scope="module")
def smoke(study, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("smoke"))
    assert study.main(["--preset", "smoke", "--out", out, "--jobs", "2",
                       "--threads-per-job", "1"]) == 0
    return out


@pytest.mark.slow
def test_smoke_preset_writes_the_table_json_and_plots(smoke, study, capsys):
    runs = json.load(open(os.path.join(smoke, "study.json")))["runs"]
    preset = get_preset("smoke")
    assert [(r["arm"], r["budget_fraction"]) for r in runs] == list(preset.plan)
    for r in runs:
        assert FIELDS <= set(r), r
        budget = round(preset.train_tokens * r["budget_fraction"])
        # sized in tokens: every arm stops at the first step that reaches its budget
        assert budget <= r["consumed_tokens"] < budget + 4 * 32
        assert math.isfinite(r["val_loss"]) and r["val_ppl"] == pytest.approx(math.exp(r["val_loss"]))
        assert 0.0 <= r["val_accuracy"] <= 1.0 and r["train_seconds"] > 0
        assert os.listdir(os.path.join(smoke, "tensorboard", r["run"]))
    by = {(r["arm"], r["budget_fraction"]): r for r in runs}
    base = by[("baseline", 1.0)]
    assert base["val_loss"] < math.log(500)          # learnt something from ln(vocab)
    # curriculum / random-LTD steps consume fewer tokens: more steps for the same budget
    assert by[("CL_seqtru_voc+random-LTD", 1.0)]["iterations"] > base["iterations"]
    table = open(os.path.join(smoke, "study.md")).read()
    assert "| CL_seqtru_voc+random-LTD | 50% |" in table and "| baseline | 100% |" in table
    for png in ("loss_vs_tokens.png", "loss_vs_time.png"):
        with open(os.path.join(smoke, png), "rb") as f:
            assert f.read(4) == b"\x89PNG"
    # Rerunning skips every finished run: same records, nothing trained again.
    logs = {r["run"]: os.path.getsize(os.path.join(smoke, "runs", r["run"], "train.log"))
            for r in runs}
    capsys.readouterr()
    assert study.main(["--preset", "smoke", "--out", smoke]) == 0
    out = capsys.readouterr().out
    assert out.count("already done, skipped") == len(runs)
    assert json.load(open(os.path.join(smoke, "study.json")))["runs"] == runs
    assert logs == {r: os.path.getsize(os.path.join(smoke, "runs", r, "train.log"))
                    for r in logs}


def _sampled(tensorboard_dir: str, metric: str) -> tuple[float, float, int]:
    """(lowest, highest, count) of the metric values of every sample a run trained on, from
    its per-step ``curriculum/<metric>_sampled`` histograms."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(tensorboard_dir, size_guidance={"histograms": 0})
    acc.Reload()
    hs = [e.histogram_value for e in acc.Histograms(f"curriculum/{metric}_sampled")]
    return min(h.min for h in hs), max(h.max for h in hs), int(sum(h.num for h in hs))


@pytest.mark.slow
def test_pruning_arms_train_only_inside_their_band_at_the_baselines_tokens(smoke):
    """The reference model trains on documents the study's corpus does not hold; its ppl
    index (and the random control's) covers the training samples; each pruning arm draws
    every training sample from its band of that index, for the baseline's whole budget."""
    from megatron.data_efficiency.analyzer.index_io import MetricIndex, percentile_prefix
    data = os.path.join(smoke, "data")
    own = set(open(os.path.join(data, "stdlib.jsonl")).read().splitlines())
    reference = open(os.path.join(data, "reference.jsonl")).read().splitlines()
    assert reference and not own & set(reference)
    ckpt = os.path.join(smoke, "reference", "checkpoints", "latest_checkpointed_iteration.txt")
    assert open(ckpt).read().strip() == str(get_preset("smoke").reference.train_iters)
    # keyed by arm and budget: the baseline also runs at 67% and 50%
    runs = {(r["arm"], r["budget_fraction"]): r
            for r in json.load(open(os.path.join(smoke, "study.json")))["runs"]}
    baseline = runs[("baseline", 1.0)]
    for arm, metric, lo, hi in (("prune_ppl_middle50", "ppl", 25, 75),
                                ("prune_ppl_easy50", "ppl", 0, 50),
                                ("prune_random50", "random", 0, 50)):
        index = MetricIndex.open(os.path.join(smoke, "index", "s1234", metric))
        n = index.num_samples
        band = (index.value_at(percentile_prefix(n, lo, 100)),
                index.value_at(percentile_prefix(n, hi, 100) - 1))
        run = runs[(arm, 1.0)]
        low, high, count = _sampled(os.path.join(smoke, "tensorboard", run["run"]), metric)
        assert band[0] <= low and high <= band[1], (arm, band, low, high)
        assert count == run["iterations"] * 4
        assert run["consumed_tokens"] == baseline["consumed_tokens"]
    # the two ppl bands differ where they should: the easy half reaches below the middle's floor
    easy, middle = (os.path.join(smoke, "tensorboard", runs[(a, 1.0)]["run"])
                    for a in ("prune_ppl_easy50", "prune_ppl_middle50"))
    assert _sampled(easy, "ppl")[0] < _sampled(middle, "ppl")[0]


@pytest.mark.slow
def test_heldout_script_scores_final_checkpoints_on_the_reference_slice(smoke):
    """examples/study_heldout.sh: each named run's final checkpoint scores the training
    samples of the first 20% of the reference slice (documents no study run saw); it prints
    the run's whole-split validation loss beside the mean of that loss index."""
    import subprocess
    from megatron.data_efficiency.analyzer import prune, valuation
    from tests.examples.fresh_clone import no_python_env
    from megatron.data_efficiency.analyzer.index_io import MetricIndex
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    runs = ["baseline_100_s1234", "CL_seqtru_voc+random-LTD_100_s1234"]
    out = subprocess.run(["bash", os.path.join(repo, "examples", "study_heldout.sh"), smoke,
                          *runs], env=no_python_env(os.path.join(smoke, "env")),
                         capture_output=True, text=True, check=True).stdout
    printed = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert list(printed) == runs
    reference = os.path.join(smoke, "data", "reference_text_document")
    means = []
    for run in runs:
        path = os.path.join(smoke, "heldout", run, "loss")
        train, fp = prune.sample_dataset(reference, path, "20,80,0", 32, 1234, 1,
                                         os.path.join(smoke, "data", "cache"))
        index = MetricIndex.open(path, fp)       # the reference slice's samples, all of them
        assert index.num_samples == len(train) > 0
        result = json.load(open(os.path.join(smoke, "runs", run, "result.json")))
        val, heldout = map(float, printed[run])
        assert val == pytest.approx(result["val_loss"], abs=1e-4)
        assert heldout == pytest.approx(valuation.mean(index), rel=1e-5)
        means.append(heldout)
    assert means[0] != means[1] and all(0 < m < math.log(500) + 1 for m in means)


def test_split_makeup_counts_every_token_of_each_split(smoke, capsys):
    """examples/split_makeup.py: the train and valid lines hold every document and token of
    their split; a string every text contains matches all of them, one none contains none."""
    import importlib.util
    from megatron.data.dataset_utils import get_train_valid_test_split_
    from megatron.data.indexed_dataset import MMapIndexedDataset
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    spec = importlib.util.spec_from_file_location(
        "split_makeup", os.path.join(repo, "examples", "split_makeup.py"))
    makeup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(makeup)
    data = os.path.join(smoke, "data")
    prefix = os.path.join(data, "stdlib_text_document")
    store = MMapIndexedDataset(prefix)
    b = get_train_valid_test_split_("90,10,0", len(store.doc_idx) - 1)
    for match, everything in (("", True), ("\x00no such text", False)):
        assert makeup.main(["--data-path", prefix, "--split", "90,10,0", "--tokenizer-model",
                            os.path.join(data, "stdlib_sp.model"), "--match", match]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert [line.split(":")[0] for line in lines] == ["train", "valid"]
        for line, first, last in zip(lines, b[:2], b[1:3]):
            docs = last - first
            tokens = int(np.asarray(store.sizes[store.doc_idx[first]:store.doc_idx[last]]).sum())
            matching = docs if everything else 0
            share = "100.0%" if everything else "0.0%"
            assert line == (f"{line.split(':')[0]}: {docs} documents ({matching} matching), "
                            f"{tokens:,} tokens, {share} in matching documents")


def _own_data(smoke: str) -> list[str]:
    """The smoke study's token store and tokenizer, given as a user's --data-path."""
    data = os.path.join(smoke, "data")
    return ["--data-path", os.path.join(data, "stdlib_text_document"),
            "--tokenizer-type", "GPTSentencePieceTokenizer",
            "--tokenizer-model", os.path.join(data, "stdlib_sp.model"),
            "--data-cache-path", os.path.join(data, "cache")]


@pytest.mark.slow
def test_interrupted_run_resumes_from_its_checkpoint(smoke, study, tmp_path):
    out = str(tmp_path / "study")
    shutil.copytree(os.path.join(smoke, "index"), os.path.join(out, "index"))
    args = ["--preset", "smoke", "--out", out, "--arms", "CL_seqtru_voc+random-LTD",
            "--budgets", "0.5", *_own_data(smoke)]
    assert study.main(args + ["--", "--exit-interval", "5"]) == 1     # stopped early
    name = "CL_seqtru_voc+random-LTD_50_s1234"
    assert not os.path.exists(os.path.join(out, "runs", name, "result.json"))
    assert study.main(args) == 0
    log = open(os.path.join(out, "runs", name, "train.log")).read()
    assert "training from iteration 5" in log
    resumed = json.load(open(os.path.join(out, "runs", name, "result.json")))
    straight = json.load(open(os.path.join(smoke, "runs", name, "result.json")))
    assert resumed["consumed_tokens"] == straight["consumed_tokens"]
    assert resumed["iterations"] == straight["iterations"]
    assert resumed["val_loss"] == pytest.approx(straight["val_loss"], rel=1e-5)


@pytest.mark.slow
def test_tuner_runs_a_real_search(smoke, tmp_path, capsys):
    tuner = load_tool("tune_data_efficiency")
    out = str(tmp_path / "tune")
    assert tuner.main(["--technique", "ltd", "--preset", "smoke", "--out", out,
                       "--fraction", "0.34", "--durations", "0.5,1.0",
                       "--threads-per-job", "1", *_own_data(smoke)]) == 0
    result = json.load(open(os.path.join(out, "tuning.json")))
    assert set(result) >= {"r_s", "T_r", "trials"}
    trials = result["trials"]
    assert 1 <= len(trials) <= 2 + 2   # r_s in (16, 32), then T_r in (0.5, 0.7, 1.0)
    for t in trials:   # each trial is a real run with several whole-split evaluations
        assert len(t["perplexities"]) >= 3 and all(p > 1 for p in t["perplexities"])
    out = capsys.readouterr().out
    assert f"[trial {len(trials)} of at most 4]" in out        # 2 starts, then 3 durations
    assert "warning" not in result                             # r_s 16 and 32 differ
    if result["r_s"] is not None:
        assert result["r_s"] in (16, 32) and result["T_r"] in (0.5, 0.7, 1.0)
        assert "--random-ltd-min-seqlen" in out


@pytest.mark.slow
def test_bert_smoke_arms(study, tmp_path):
    """Table 3's BERT-only pieces: the seqreo_voc curriculum over its seqlen_voc index and
    the composed arm, as real pretrain_bert.py runs (no accuracy for BERT)."""
    out = str(tmp_path / "bert")
    arms = "baseline,CL_seqreo_voc,CL_seqtru_voc+random-LTD"
    assert study.main(["--preset", "smoke", "--model", "bert", "--out", out, "--arms", arms,
                       "--budgets", "1", "--threads-per-job", "1"]) == 0
    runs = json.load(open(os.path.join(out, "study.json")))["runs"]
    assert [r["arm"] for r in runs] == arms.split(",")
    assert os.path.exists(os.path.join(out, "index", "s1234", "seqlen_voc", "meta.json"))
    for r in runs:
        assert (FIELDS - {"val_accuracy"}) <= set(r) and "val_accuracy" not in r
        assert math.isfinite(r["val_loss"]) and r["consumed_tokens"] >= 3072
    assert "val acc" not in open(os.path.join(out, "study.md")).read()


@pytest.mark.slow
def test_llama_smoke_composed_arm(smoke, study, tmp_path):
    """--model llama: the composed arm trains the Llama layer (RMSNorm, one key/value head
    for the two query heads, SwiGLU, no bias anywhere, untied) on the smoke study's data and
    index, in more (cheaper) steps than the GPT baseline takes to the same budget."""
    from megatron.checkpointing.whole_model import load_whole
    out = str(tmp_path / "llama")
    shutil.copytree(os.path.join(smoke, "index"), os.path.join(out, "index"))
    assert study.main(["--preset", "smoke", "--model", "llama", "--out", out, "--arms",
                       "CL_seqtru_voc+random-LTD", "--budgets", "1", "--threads-per-job", "1",
                       *_own_data(smoke)]) == 0
    meta = json.load(open(os.path.join(out, "study.json")))
    (run,) = meta["runs"]
    assert meta["model"] == "llama" and run["arm"] == "CL_seqtru_voc+random-LTD"
    assert math.isfinite(run["val_loss"]) and 3072 <= run["consumed_tokens"] < 3072 + 4 * 32
    _, _, config, full = load_whole(os.path.join(out, "runs", run["run"], "checkpoints"))
    assert config.model.normalization == "RMSNorm" and config.model.num_query_groups == 1
    assert config.model.swiglu and config.model.untie_embeddings_and_output_weights
    assert config.data_efficiency.curriculum.enabled and config.data_efficiency.random_ltd.enabled
    assert "output_layer.weight" in full and not [k for k in full if k.endswith("bias")]
    gpt = json.load(open(os.path.join(smoke, "study.json")))["runs"]
    baseline = next(r for r in gpt if (r["arm"], r["budget_fraction"]) == ("baseline", 1.0))
    assert run["iterations"] > baseline["iterations"]


def test_moe_preset_runs_the_moe_baseline_and_the_composed_arm(study, tmp_path):
    """The MoE preset (paper Table 2, cases 16-17): both arms train a 4-expert model (the
    runs log the MoE load-balancing loss) and are recorded at the same budget."""
    out = str(tmp_path / "moe")
    assert study.main(["--preset", "moe-smoke", "--out", out, "--threads-per-job", "1"]) == 0
    runs = json.load(open(os.path.join(out, "study.json")))["runs"]
    assert [(r["arm"], r["budget_fraction"]) for r in runs] == \
        [("baseline", 1.0), ("CL_seqtru_voc+random-LTD", 1.0)]
    for r in runs:
        assert math.isfinite(r["val_loss"]) and r["consumed_tokens"] >= 3072
        log = open(os.path.join(out, "runs", f"{r['arm']}_100_s{r['seed']}", "train.log")).read()
        assert "moe/load_balancing_loss" in log, log[-2000:]


def test_reference_data_flag_is_required_on_own_data_and_never_ignored(study, tmp_path, capsys):
    own = ["--data-path", str(tmp_path / "none_text_document"), "--tokenizer-type",
           "NullTokenizer"]
    cases = [(["--arms", "prune_ppl_easy50", *own], "need --reference-data-path"),
             (["--arms", "baseline", *own, "--reference-data-path", "x"], "read only by"),
             (["--arms", "prune_ppl_easy50", "--reference-data-path", "x"], "goes with --data-path"),
             (["--model", "bert", "--arms", "prune_ppl_easy50"], "unknown arm")]
    for args, message in cases:
        assert study.main(["--preset", "smoke", "--out", str(tmp_path / "o"), *args]) == 2
        assert message in capsys.readouterr().err, args


def test_scaling_preset_end_to_end(smoke, study, tmp_path):
    """The scaling machinery as real runs on the smoke model (scaling-smoke: budgets B
    and 2B, one seed; the 0.5B runs left out, the B runs of baseline and composed arm
    reused from the smoke study, the same runs): the same-steps control at its smaller
    batch taking at least the composed arm's steps, every run's evaluations, and the
    analysis, report and plots read from the runs' metrics files."""
    from megatron.study import scaling
    out = str(tmp_path / "scaling")
    shutil.copytree(os.path.join(smoke, "index"), os.path.join(out, "index"))
    for run in ("baseline_100_s1234", "CL_seqtru_voc+random-LTD_100_s1234"):
        shutil.copytree(os.path.join(smoke, "runs", run), os.path.join(out, "runs", run))
    assert study.main(["--preset", "scaling-smoke", "--out", out, "--jobs", "2",
                       "--threads-per-job", "1", "--budgets", "1,2", *_own_data(smoke)]) == 0
    preset = get_preset("scaling-smoke")
    runs = json.load(open(os.path.join(out, "study.json")))["runs"]
    plan = [(a, f) for a, f in preset.plan if f >= 1]
    assert [(r["arm"], r["budget_fraction"]) for r in runs] == plan
    by = {(r["arm"], r["budget_fraction"]): r for r in runs}
    for arm, f in plan:
        r = by[(arm, f)]
        assert r["iterations"] == scaling.planned_steps(preset, arm, f)
        curve = results_curve(out, r["run"])
        assert len(curve) >= preset.evaluations and curve[-1]["iteration"] == r["iterations"]
        assert r["consumed_tokens"] >= preset.train_tokens * f
    command = open(os.path.join(out, "runs", "baseline-same-steps_100_s1234",
                                "command.txt")).read()
    assert "--global-batch-size 3 " in command and "--micro-batch-size 3 " in command
    analysis = json.load(open(os.path.join(out, "scaling.json")))
    assert [row["name"] for row in analysis["levels"]] == ["B", "2B"]
    assert analysis["trend"]["verdict"] in ("grows", "holds", "shrinks", "unresolved",
                                            "no gain")
    for row in analysis["levels"]:
        steps = row["same_steps"]["steps"]
        assert steps["baseline"] < steps["composed"] <= steps["control"]
    for name in ("scaling.md", "scaling_curves.png", "scaling_data_to_quality.png",
                 "scaling_same_steps.png"):
        assert os.path.exists(os.path.join(out, name)), name
    assert not os.path.exists(os.path.join(out, "loss_vs_tokens.png"))   # every arm on one axes


def results_curve(out: str, run: str) -> list[dict]:
    """A run's validation curve, read from its metrics file."""
    from megatron.study.results import run_record
    return run_record(os.path.join(out, "runs", run, "metrics.jsonl"))["curve"]
