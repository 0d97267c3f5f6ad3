"""Runs a study: builds the data and indexes once, runs every (arm, budget, seed) as an
ordinary ``pretrain_*.py`` process in its own folder (resumable), reads the results back
and writes the outputs. Progress (step, loss, ETA) is printed as the runs go.

Everything the study learns of a run comes from the run's metrics file
(``runs/<run>/metrics.jsonl``, ``megatron.metrics_file``): progress, the results, and
the analyzer index a run asks for. Its printed log goes to ``train.log`` for people
only, so rewording a log line changes nothing here."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from megatron.metrics_file import read_metrics
from megatron.study import data as study_data
from megatron.study import results, scaling_report
from megatron.study.commands import (MODEL_METRICS, DataSpec, RunSpec, budget_tokens,
                                     pretrain_command)
from megatron.study.presets import Preset
from megatron.study.progress import Progress, TrainingProgress, print_flush

BASE_SEED = 1234
METRICS_FILE = "metrics.jsonl"   # in the run's folder


class RunFailed(RuntimeError):
    """A ``pretrain_*.py`` run exited with an error; the message holds its log's tail."""


@dataclass
class StudyConfig:
    """What to run. ``plan`` lists (arm name, budget fraction); ``data`` None builds the
    default corpus; ``extra`` flags go to every run (after the preset's);
    ``reference_data``: the pruning arms' reference model's token store (default: on the
    default corpus, a disjoint slice of it; required with the user's ``data``)."""
    preset: Preset
    out_dir: str
    seeds: int
    plan: list[tuple[str, float]]
    data: DataSpec | None = None
    jobs: int = 1
    threads_per_job: int | None = None
    extra: tuple[str, ...] = ()
    title: str = ""
    reference_data: DataSpec | None = None
    printer: Callable[[str], None] = field(default=None)

    def __post_init__(self) -> None:
        if self.printer is None:
            self.printer = print_flush

    def seeds_list(self) -> list[int]:
        return [BASE_SEED + i for i in range(self.seeds)]


def _train(cmd: list[str], run_dir: str, threads: int, progress: Progress, name: str) -> int:
    """Run one pretraining process, appending its output to ``train.log``; progress from
    the lines it appends to its metrics file."""
    results.write_atomic(os.path.join(run_dir, "command.txt"), " ".join(cmd) + "\n")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    training = TrainingProgress(os.path.join(run_dir, METRICS_FILE))

    def report() -> None:
        for text in training.poll():
            progress.say(f"  [{name}] {text}")

    with open(os.path.join(run_dir, "train.log"), "a", buffering=1) as log:   # tail -f works
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env, cwd=study_data.ROOT)
        for text in proc.stdout:
            log.write(text)
            report()
        rc = proc.wait()
    report()
    return rc


def _index_samples_needed(metrics_path: str) -> int | None:
    """The ``--train-samples`` of the analyzer run training asked for, when it refused an
    index built for other samples (the arm draws more samples than one epoch): the
    ``end`` line's error of its metrics file."""
    if not os.path.exists(metrics_path):
        return None
    end = read_metrics(metrics_path).end or {}
    error = end.get("error") or {}
    if error.get("type") != "IndexMismatchError":
        return None
    return int(error["train_samples"])


def execute_run(preset: Preset, run: RunSpec, data: DataSpec, out_dir: str, index_dir: str,
                extra: tuple[str, ...], threads: int, progress: Progress,
                reference: str | None = None) -> dict:
    """Run one arm x budget x seed unless its ``result.json`` exists; an interrupted run
    resumes from its last checkpoint (``--load``). An arm that draws more training samples
    than the shared index covers gets an index of its own (``<index>_n<samples>``, kept in
    ``index.txt``). Returns its record."""
    run_dir = os.path.join(out_dir, "runs", run.name)
    result_path = os.path.join(run_dir, "result.json")
    if os.path.exists(result_path):
        with open(result_path) as f:
            record = json.load(f)
        progress.finished(run.name, record, skipped=True)
        return record
    os.makedirs(run_dir, exist_ok=True)
    tb_dir = os.path.join(out_dir, "tensorboard", run.name)
    log_path = os.path.join(run_dir, "train.log")
    metrics_path = os.path.join(run_dir, METRICS_FILE)
    own_index = os.path.join(run_dir, "index.txt")
    if os.path.exists(own_index):
        index_dir = open(own_index).read().strip()
    for attempt in range(2):
        cmd = [sys.executable, *pretrain_command(preset, run, data, run_dir, tb_dir,
                                                 index_dir, extra, metrics_path)]
        rc = _train(cmd, run_dir, threads, progress, run.name)
        needed = _index_samples_needed(metrics_path) if rc != 0 and attempt == 0 else None
        if needed is None:
            break
        index_dir = f"{index_dir}_n{needed}"
        progress.say(f"  [{run.name}] draws {needed} samples: its own index -> {index_dir}")
        study_data.build_index(preset, data, run.seed, index_dir, [run.arm], progress.say,
                               samples=needed, reference=reference)
        results.write_atomic(own_index, index_dir + "\n")
    if rc != 0:
        with open(log_path) as f:
            tail = f.read()[-4000:]
        raise RunFailed(f"run {run.name} failed (exit {rc}); log: {log_path}\n{tail}")
    return _finish(preset, run, metrics_path, log_path, result_path, progress)


def _finish(preset: Preset, run: RunSpec, metrics_path: str, log_path: str, result_path: str,
            progress: Progress) -> dict:
    """Read the finished run back, check it reached its budget, write ``result.json``."""
    try:
        read = results.run_record(metrics_path)
    except ValueError as exc:   # e.g. stopped by --exit-interval before any evaluation
        raise RunFailed(f"run {run.name} did not finish ({exc}); rerun the study to resume "
                        f"it (log: {log_path})") from None
    record = {"arm": run.arm.name, "budget_fraction": run.budget_fraction, "seed": run.seed,
              "run": run.name, **read}
    budget = budget_tokens(preset, run.budget_fraction)
    if record["consumed_tokens"] < budget:   # e.g. --exit-interval / --exit-duration-in-mins
        raise RunFailed(f"run {run.name} stopped at {record['consumed_tokens']} of its "
                        f"{budget} tokens; rerun the study to resume it (log: {log_path})")
    results.write_atomic(result_path, json.dumps(record, indent=1) + "\n")
    progress.finished(run.name, record, skipped=False)
    return record


def plan_runs(cfg: StudyConfig) -> list[RunSpec]:
    """Every (arm, budget) of the plan for every seed, in plan order."""
    arms = cfg.preset.arms
    unknown = [a for a, _ in cfg.plan if a not in arms]
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown} for {cfg.preset.model}; known: "
                         f"{', '.join(arms)}")
    return [RunSpec(arms[a], f, seed) for a, f in cfg.plan for seed in cfg.seeds_list()]


def reference_model(cfg: StudyConfig, data: DataSpec, arms,
                    say: Callable[[str], None]) -> str | None:
    """The reference model's checkpoint when a pruning arm windows on a model metric
    (trained first, once, under ``OUT/reference``); None when no arm needs one."""
    preset, out = cfg.preset, cfg.out_dir
    if not any(a.window is not None and a.window.metric in MODEL_METRICS for a in arms):
        if cfg.reference_data is not None:
            raise ValueError("--reference-data-path is read only by the pruning arms "
                             "(prune_ppl_*), and none is in this study's plan")
        return None
    if cfg.reference_data is not None:
        ref = cfg.reference_data
    elif cfg.data is None:
        ref = study_data.reference_slice(preset, data, os.path.join(out, "data"), say)
    else:
        raise ValueError("the pruning arms on your --data-path need --reference-data-path: "
                         "a token store of the same tokenizer, disjoint from the training "
                         "data, that the reference model trains on")
    say(f"reference model ({preset.reference.train_iters} steps on {ref.data_path}) -> "
        f"{os.path.join(out, 'reference')}")
    return study_data.train_reference(preset, ref, os.path.join(out, "reference"), BASE_SEED,
                                      say)


def run_study(cfg: StudyConfig) -> tuple[list[dict], list[str]]:
    """Data, indexes, runs, outputs. Returns the records and the output paths."""
    say = Progress(0, cfg.printer).say
    preset, out = cfg.preset, cfg.out_dir
    os.makedirs(out, exist_ok=True)
    runs = plan_runs(cfg)
    start = time.time()
    data = cfg.data
    if data is None:
        say(f"data: the default corpus -> {os.path.join(out, 'data')}")
        data = study_data.default_corpus(preset, os.path.join(out, "data"), say)
    arms = {r.arm.name: r.arm for r in runs}.values()
    reference = reference_model(cfg, data, arms, say)
    for seed in cfg.seeds_list():
        say(f"analyzer index for seed {seed} (as needed) -> {out}/index/s{seed}")
        study_data.build_index(preset, data, seed, os.path.join(out, "index", f"s{seed}"),
                               arms, say, reference=reference)
    threads = cfg.threads_per_job or max(1, (os.cpu_count() or 1) // max(1, cfg.jobs))
    progress = Progress(len(runs), cfg.printer)
    say(f"{len(runs)} runs, {cfg.jobs} at a time, {threads} thread(s) each; "
        f"TensorBoard: tensorboard --logdir {os.path.join(out, 'tensorboard')}")

    def one(run: RunSpec) -> dict:
        return execute_run(preset, run, data, out, os.path.join(out, "index", f"s{run.seed}"),
                           cfg.extra, threads, progress, reference)

    with ThreadPoolExecutor(max_workers=max(1, cfg.jobs)) as pool:
        records = [f.result() for f in [pool.submit(one, r) for r in runs]]
    meta = {"preset": preset.name, "model": preset.model, "seeds": cfg.seeds_list(),
            "train_tokens_100": preset.train_tokens, "study_seconds": round(time.time() - start, 1)}
    title = cfg.title or f"Data-efficiency study: preset {preset.name} ({preset.model})"
    # A scaling study's plots are its own, one per question (every arm on one axes would
    # not read); its analysis goes to scaling.md / scaling.json.
    paths = results.write_outputs(records, meta, out, title, plots=not preset.levels)
    if preset.levels:
        paths += scaling_report.write_report(records, preset, out, title.replace(
            "Data-efficiency study", "Scaling study"))
    return records, paths
