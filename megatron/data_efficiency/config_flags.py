"""Data-efficiency configuration from Megatron-style flags: ``--curriculum-*`` (one value
per ``--curriculum-metric``, or one for all), ``--data-efficiency-config`` /
``--deepspeed_config`` and the ``--random-ltd*`` flags, turned into the same
``DataEfficiencyConfig`` a DeepSpeed-shaped JSON gives (``config.py``): the flags are
written as that JSON and read by ``config_from_dict``, so both paths share every check.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from megatron.data_efficiency.config import (TRANSFORM_ALIASES, DataEfficiencyConfig,
                                             config_from_dict, load_config_file)
from megatron.data_efficiency.curriculum.scheduler import SCHEDULE_TYPES
from megatron.data_efficiency.random_ltd import config as random_ltd_config
from megatron.data_efficiency.random_ltd import flags as random_ltd_flags
from megatron.given_flags import note_from_config, was_given


def add_curriculum_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register the curriculum flags.

    Per-metric flags take one value per ``--curriculum-metric`` name, in the same order,
    or a single value that applies to every metric. ``--curriculum-index-path`` takes one
    folder per metric (``-`` for seqtru/seqres) or one per index metric. Example
    (CL_seqtru_voc)::

        --data-efficiency-curriculum-learning --curriculum-metric seqtru voc
        --curriculum-index-path DIR/voc --curriculum-min-difficulty 80 1
        --curriculum-max-difficulty 2048 100 --curriculum-schedule-type fixed_linear fixed_root
        --curriculum-total-steps 1000 --curriculum-difficulty-step 8 1 --curriculum-root-degree 1 2
    """
    g = parser.add_argument_group("data efficiency: curriculum learning")
    g.add_argument("--data-efficiency-config", type=str, default=None, metavar="FILE",
                   help="DeepSpeed-shaped data_efficiency JSON (section or whole config)")
    g.add_argument("--data-efficiency-curriculum-learning", action="store_true",
                   help="enable curriculum learning (metrics from the file or the flags below)")
    g.add_argument("--curriculum-metric", nargs="+", default=None, metavar="NAME",
                   help="metrics: seqtru|seqres (transforms) or analyzer metrics (voc, seqlen, ...)")
    g.add_argument("--curriculum-index-path", nargs="+", default=None, metavar="DIR")
    g.add_argument("--curriculum-difficulty-type", nargs="+", default=None,
                   choices=["value", "percentile", "percentile_window"])
    g.add_argument("--curriculum-window-low", nargs="+", type=float, default=None,
                   metavar="PERCENTILE",
                   help="percentile_window: the band's fixed low edge (the min/max "
                        "difficulties pace its high edge)")
    g.add_argument("--curriculum-min-difficulty", nargs="+", type=float, default=None)
    g.add_argument("--curriculum-max-difficulty", nargs="+", type=float, default=None)
    g.add_argument("--curriculum-schedule-type", nargs="+", default=None, choices=SCHEDULE_TYPES)
    g.add_argument("--curriculum-total-steps", nargs="+", type=int, default=None)
    g.add_argument("--curriculum-difficulty-step", nargs="+", type=int, default=None)
    g.add_argument("--curriculum-root-degree", nargs="+", type=float, default=None)
    g.add_argument("--curriculum-custom-function", nargs="+", default=None,
                   metavar="MODULE:FUNCTION")
    return parser


_PER_METRIC = ("index_path", "difficulty_type", "min_difficulty", "max_difficulty",
               "schedule_type", "total_steps", "difficulty_step", "root_degree",
               "custom_function", "window_low")


def _per_metric(args: argparse.Namespace, key: str, names: list[str]) -> list[Any]:
    vals = getattr(args, f"curriculum_{key}", None)
    flag = "--curriculum-" + key.replace("_", "-")
    if vals is None:
        return [None] * len(names)
    if key == "index_path" and len(vals) != len(names):
        index_names = [n for n in names if n not in TRANSFORM_ALIASES]
        if len(vals) == len(index_names):
            it = iter(vals)
            return [None if n in TRANSFORM_ALIASES else next(it) for n in names]
    if len(vals) == 1:
        return vals * len(names)
    if len(vals) != len(names):
        raise ValueError(f"{flag}: {len(vals)} values for {len(names)} metrics {names}; give "
                         f"one value or one per --curriculum-metric")
    return [None if v == "-" else v for v in vals]


def _as_int_if_whole(x: float) -> float:
    return int(x) if float(x).is_integer() else x


def config_from_args(args: argparse.Namespace) -> DataEfficiencyConfig:
    """The whole data-efficiency config from the parsed flags: the curriculum from
    ``--data-efficiency-config`` or the ``--curriculum-*`` flags, random-LTD from the
    file's ``data_routing.random_ltd`` or the ``--random-ltd*`` flags (one place only).
    The file's ``data_sampling.num_workers`` sets ``--num-workers`` when that flag was not
    given (``megatron.given_flags``), and must equal it when it was.

    Raises:
        ValueError: naming the contradictory or bad flags / keys.
    """
    cfg = _curriculum_from_args(args, args.seq_length)
    file_flag, path = _config_file(args)
    if cfg.random_ltd.enabled:
        # A bare --random-ltd beside the file's section is what Megatron-DeepSpeed's
        # recipes pass (it builds the dropping layers; the JSON holds the settings).
        given = [f"--{n.replace('_', '-')}" for n in random_ltd_config.FLAG_NAMES
                 if getattr(args, n, None) is not None]
        if given:
            raise ValueError(f"random-LTD is set both in {file_flag} {path} "
                             f"(data_routing.random_ltd) and by {given}; give it in one place")
        cfg.random_ltd.check_total_layers(args.num_layers)
        cfg.random_ltd.resolve_layer_ids(args.num_layers)
    else:
        cfg = dataclasses.replace(cfg, random_ltd=random_ltd_flags.config_from_args(
            args, args.num_layers, args.seq_length))
    if cfg.num_workers is not None and cfg.num_workers != args.num_workers:
        # explicit beats default: the file's value replaces the --num-workers default
        if was_given(args, "num_workers"):
            raise ValueError(f"{file_flag} {path}: data_sampling.num_workers {cfg.num_workers} "
                             f"contradicts --num-workers {args.num_workers}")
        note_from_config(args, "num_workers", cfg.num_workers,
                         f"{file_flag} {path} data_sampling.num_workers")
    return cfg


def _config_file(args: argparse.Namespace) -> tuple[str, str | None]:
    """The flag naming the data-efficiency JSON and its path (None: no file)."""
    if getattr(args, "deepspeed_config", None):
        return "--deepspeed_config", args.deepspeed_config
    return "--data-efficiency-config", getattr(args, "data_efficiency_config", None)
def _window_from_flags(m: dict, v: dict, name: str) -> None:
    """``--curriculum-window-low`` with percentile_window: the JSON's [lo, hi] pairs (a
    static window given without any schedule flag needs no schedule)."""
    low = v["window_low"]
    if v["schedule_type"] is None and v["total_steps"] is None and \
            v["min_difficulty"] == v["max_difficulty"]:
        del m["schedule_type"], m["schedule_config"]
    if low is None:
        raise ValueError(f"curriculum metric {name}: --curriculum-difficulty-type "
                         f"percentile_window needs --curriculum-window-low")
    for key in ("min_difficulty", "max_difficulty"):
        if key in m:
            m[key] = [_as_int_if_whole(low), m[key]]


def _curriculum_from_args(args: argparse.Namespace, seq_length: int | None
                          ) -> DataEfficiencyConfig:
    """The config of ``--data-efficiency-config`` or of the per-metric flags."""
    names = getattr(args, "curriculum_metric", None)
    seed = int(getattr(args, "seed", 1234) or 1234)
    file_flag, path = _config_file(args)
    if path is not None:
        if names:
            raise ValueError(f"--curriculum-metric and {file_flag} are "
                             "contradictory: give the metrics in one place")
        cfg = load_config_file(path, seq_length, file_flag)
        if args.data_efficiency_curriculum_learning and not cfg.curriculum.enabled:
            raise ValueError(f"--data-efficiency-curriculum-learning is set but "
                             f"{path} does not enable curriculum learning")
        return cfg
    if not getattr(args, "data_efficiency_curriculum_learning", False):
        if names:
            raise ValueError("--curriculum-metric needs --data-efficiency-curriculum-learning")
        return DataEfficiencyConfig(seed=seed)
    if not names:
        raise ValueError("--data-efficiency-curriculum-learning needs --curriculum-metric "
                         "or --data-efficiency-config")
    cols = {k: _per_metric(args, k, names) for k in _PER_METRIC}
    if getattr(args, "curriculum_window_low", None) is not None and \
            "percentile_window" not in cols["difficulty_type"]:
        raise ValueError("--curriculum-window-low needs a metric with "
                         "--curriculum-difficulty-type percentile_window")
    metrics = {}
    for i, name in enumerate(names):
        v = {k: cols[k][i] for k in _PER_METRIC}
        sc = {}
        if (v["schedule_type"] or "fixed_linear") in ("fixed_linear", "fixed_root"):
            sc = {"total_curriculum_step": v["total_steps"],
                  "difficulty_step": v["difficulty_step"] or 1}
        elif v["total_steps"] is not None or v["difficulty_step"] is not None:
            sc = {"total_curriculum_step": v["total_steps"],
                  "difficulty_step": v["difficulty_step"]}   # refused: not read
        sc = {k: x for k, x in sc.items() if x is not None}
        if v["root_degree"] is not None:
            sc["root_degree"] = _as_int_if_whole(v["root_degree"])
        if v["custom_function"] is not None:
            sc["custom_function"] = v["custom_function"]
        m = {"schedule_type": v["schedule_type"] or "fixed_linear", "schedule_config": sc}
        for key in ("min_difficulty", "max_difficulty"):
            if v[key] is not None:
                m[key] = _as_int_if_whole(v[key])
        for key in ("difficulty_type", "index_path"):
            if v[key] is not None:
                m[key] = v[key]
        if v["difficulty_type"] == "percentile_window":
            _window_from_flags(m, v, name)
        metrics[name] = m
    de = {"enabled": True, "seed": seed, "data_sampling": {"enabled": True,
          "curriculum_learning": {"enabled": True, "curriculum_metrics": metrics}}}
    return config_from_dict(de, source="--curriculum-* flags", seq_length=seq_length)
