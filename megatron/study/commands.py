"""Arms -> ordinary ``pretrain_gpt.py`` / ``pretrain_bert.py`` command lines (pure
functions of a preset, an arm, a budget and a seed)."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

from megatron.study.presets import Arm, Preset

# DeepSpeed's recommended steps: difficulty multiples of 8 tokens, kept lengths of 16.
DIFFICULTY_STEP = 8
SEQ_PER_STEP = 16
# Which analyzer metric each index-based curriculum metric reads.
INDEX_OF = {"voc": "voc", "seqreo": "seqlen", "seqreo_voc": "seqlen_voc"}
# The pruning windows' indexes: perplexity under the reference model (an analyzer model
# metric), and the random control, a user metric (a hash of each sample's tokens).
MODEL_METRICS = ("ppl",)
RANDOM_METRIC_FN = "random=megatron.data_efficiency.analyzer.valuation:random_rank"


@dataclass(frozen=True)
class DataSpec:
    """Where a study's data is: the token store prefix and the tokenizer flags."""
    data_path: str
    tokenizer_flags: tuple[str, ...]
    cache_dir: str


@dataclass(frozen=True)
class RunSpec:
    """One run of the study: an arm at a budget fraction with a seed."""
    arm: Arm
    budget_fraction: float
    seed: int
    label: str | None = None   # a name of its own (the tuner's trials)

    @property
    def name(self) -> str:
        """``<arm>_<budget %>_s<seed>``: the run's folder and TensorBoard dir name."""
        if self.label is not None:
            return self.label
        return f"{self.arm.name}_{round(self.budget_fraction * 100)}_s{self.seed}"


def budget_tokens(preset: Preset, fraction: float) -> int:
    return int(round(preset.train_tokens * fraction))


def nominal_steps(preset: Preset, tokens: int) -> int:
    """Steps a baseline run takes for ``tokens`` (the unit of T_c and T_r)."""
    return max(1, math.ceil(tokens / (preset.global_batch_size * preset.seq_length)))


def eval_interval(preset: Preset, steps: int) -> int:
    """Steps between evaluations of a run of ``steps`` baseline steps: the preset's
    ``eval_interval``, or with ``evaluations`` set, ``steps // evaluations`` (a baseline
    run evaluates that many times; an arm taking more steps for its tokens, more)."""
    if preset.evaluations is None:
        return preset.eval_interval
    return max(1, steps // preset.evaluations)


def batch_sizes(preset: Preset, arm: Arm) -> tuple[int, int]:
    """(micro, global) batch of ``arm``'s runs: the preset's, or the same-steps control's
    ``same_steps_batch`` as both."""
    if arm.same_steps:
        if not preset.same_steps_batch:
            raise ValueError(f"arm {arm.name} needs a preset with a same_steps_batch")
        return preset.same_steps_batch, preset.same_steps_batch
    return preset.micro_batch_size, preset.global_batch_size


def train_samples(preset: Preset) -> int:
    """Training samples the 100% baseline draws (what the analyzer indexes)."""
    return nominal_steps(preset, preset.train_tokens) * preset.global_batch_size


def analyzer_metrics(arms) -> list[str]:
    """Analyzer metrics the given arms' curricula need (empty: no index to build)."""
    wanted = {INDEX_OF[m] for arm in arms for m in arm.curriculum if m in INDEX_OF}
    metrics = (["total_vocab_freq"] if any("voc" in m for m in wanted) else []) + sorted(wanted)
    return metrics


def window_metrics(arms) -> list[str]:
    """The indexes the given arms' pruning windows read (``ppl``, ``random``), sorted."""
    return sorted({arm.window.metric for arm in arms if arm.window is not None})


def _metric_columns(metric: str, preset: Preset, index_dir: str) -> tuple:
    """(name, index, difficulty type, min, max, schedule, step, root) of one metric."""
    h, seq = preset.hyper, preset.seq_length
    if metric in ("seqtru", "seqres"):
        d_s = min(seq, max(DIFFICULTY_STEP, round(h.d_s_seqlen * seq)))
        return (metric, "-", "value", d_s, seq, "fixed_linear", DIFFICULTY_STEP, 1)
    if metric not in INDEX_OF:
        raise ValueError(f"unknown curriculum metric {metric!r}")
    root = 2 if "voc" in metric else 1   # rarity paces by the square root, as DeepSpeed's GPT
    return (metric, os.path.join(index_dir, INDEX_OF[metric]), "percentile",
            max(1, round(h.d_s_percentile)), 100, "fixed_root" if root == 2 else "fixed_linear",
            1, root)


def window_flags(arm: Arm, index_dir: str) -> list[str]:
    """A pruning arm's static ``percentile_window``: the sampler draws only the samples
    between the two percentiles of the index, for the whole run."""
    w = arm.window
    return ["--data-efficiency-curriculum-learning", "--curriculum-metric", w.metric,
            "--curriculum-index-path", os.path.join(index_dir, w.metric),
            "--curriculum-difficulty-type", "percentile_window",
            "--curriculum-window-low", str(w.low), "--curriculum-min-difficulty", str(w.high),
            "--curriculum-max-difficulty", str(w.high)]


def curriculum_flags(arm: Arm, preset: Preset, steps: int, index_dir: str) -> list[str]:
    """The curriculum (or pruning window) flags of ``arm`` for a run of ``steps`` baseline
    steps."""
    if arm.window is not None:
        return window_flags(arm, index_dir)
    if not arm.curriculum:
        return []
    cols = list(zip(*(_metric_columns(m, preset, index_dir) for m in arm.curriculum)))
    names = ("--curriculum-metric", "--curriculum-index-path", "--curriculum-difficulty-type",
             "--curriculum-min-difficulty", "--curriculum-max-difficulty",
             "--curriculum-schedule-type", "--curriculum-difficulty-step",
             "--curriculum-root-degree")
    flags = ["--data-efficiency-curriculum-learning"]
    for flag, values in zip(names, cols):
        flags += [flag, *map(str, values)]
    return flags + ["--curriculum-total-steps", str(max(1, round(preset.hyper.t_c * steps)))]


def random_ltd_flags(arm: Arm, preset: Preset, steps: int) -> list[str]:
    if not arm.random_ltd:
        return []
    seq = preset.seq_length
    r_s = min(seq, max(SEQ_PER_STEP, round(preset.hyper.r_s * seq)))
    return ["--random-ltd", "--random-ltd-min-seqlen", str(r_s),
            "--random-ltd-total-steps", str(max(1, round(preset.hyper.t_r * steps))),
            "--random-ltd-seq-per-step", str(SEQ_PER_STEP)]


def pretrain_command(preset: Preset, run: RunSpec, data: DataSpec, run_dir: str,
                     tensorboard_dir: str, index_dir: str, extra: tuple[str, ...] = (),
                     metrics_file: str | None = None) -> list[str]:
    """The full ``pretrain_*.py`` argument list (script path first) of one run.

    Sized in tokens: ``--train-tokens`` is the run's budget, warmup is the same number of
    tokens at every budget, the decay spans the run's budget. Each evaluation reads the
    whole validation split (``--eval-full``). The study reads the run's
    ``--metrics-file`` (default ``<run_dir>/metrics.jsonl``); TensorBoard is for people.
    """
    tokens = budget_tokens(preset, run.budget_fraction)
    steps = nominal_steps(preset, tokens)
    warmup = int(preset.train_tokens * preset.warmup_fraction)
    interval = eval_interval(preset, steps)
    micro, gbs = batch_sizes(preset, run.arm)
    ckpt = os.path.join(run_dir, "checkpoints")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = os.path.join(root, preset.script)
    p = preset
    flags = [script,
             "--num-layers", str(p.num_layers), "--hidden-size", str(p.hidden_size),
             "--num-attention-heads", str(p.num_attention_heads),
             "--seq-length", str(p.seq_length), "--max-position-embeddings", str(p.seq_length),
             "--micro-batch-size", str(micro), "--global-batch-size", str(gbs),
             "--train-tokens", str(tokens), "--lr", str(p.lr), "--min-lr", str(p.min_lr),
             "--lr-decay-style", "cosine", "--lr-warmup-tokens", str(warmup),
             "--lr-decay-tokens", str(tokens), "--seed", str(run.seed),
             "--data-path", data.data_path, "--split", p.split,
             "--data-cache-path", data.cache_dir, *data.tokenizer_flags,
             "--eval-full", "--eval-interval", str(interval),
             "--log-interval", str(p.log_interval), "--tensorboard-dir", tensorboard_dir,
             "--metrics-file", metrics_file or os.path.join(run_dir, "metrics.jsonl"),
             # TensorBoard for people: iteration time and the validation ppl too
             "--log-timers-to-tensorboard", "--log-validation-ppl-to-tensorboard",
             "--save", ckpt, "--load", ckpt, "--save-interval", str(interval),
             *p.extra]
    flags += curriculum_flags(run.arm, p, steps, index_dir)
    flags += random_ltd_flags(run.arm, p, steps)
    return flags + list(extra)
