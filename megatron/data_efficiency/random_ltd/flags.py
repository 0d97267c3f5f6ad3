"""The ``--random-ltd*`` flags and the one translation of them into ``RandomLTDConfig``
(the JSON section is read by ``megatron.data_efficiency.config``)."""
from __future__ import annotations

import argparse

from megatron.data_efficiency.random_ltd.config import (DEFAULT_MIN_SEQLEN,
                                                        DEFAULT_SEQ_PER_STEP, FLAG_NAMES,
                                                        RandomLTDConfig)


def add_random_ltd_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Registers the random-LTD flags (defaults ``None`` so that conflicts are detectable)."""
    group = parser.add_argument_group("random-LTD", "random layerwise token dropping")
    group.add_argument("--random-ltd", action="store_true",
                       help="Enable random layerwise token dropping.")
    group.add_argument("--random-ltd-layer-num", type=int, default=None,
                       help="Number of middle layers that drop tokens (centred).")
    group.add_argument("--random-ltd-layer-ids", type=int, nargs="+", default=None,
                       help="Global 0-based ids of the layers that drop tokens "
                            "(default: all but the first and the last).")
    group.add_argument("--random-ltd-min-seqlen", type=int, default=None,
                       help=f"Kept length r_s at step 0 (default {DEFAULT_MIN_SEQLEN}).")
    group.add_argument("--random-ltd-total-steps", type=int, default=None,
                       help="Steps T_r for the kept length to reach the full sequence.")
    group.add_argument("--random-ltd-seq-per-step", type=int, default=None,
                       help=f"Kept length granularity (default {DEFAULT_SEQ_PER_STEP}).")
    return parser


def config_from_args(args: argparse.Namespace, num_layers: int,
                     seq_length: int) -> RandomLTDConfig:
    """Builds the config from the parsed ``--random-ltd*`` flags (the JSON section is read
    by ``data_efficiency.config``, which also refuses both at once).

    Args:
        args: parsed flags (from :func:`add_random_ltd_args`).
        num_layers: ``--num-layers``, to check the layer ids.
        seq_length: ``--seq-length``, the default ``max_seqlen``.
    """
    given = [f"--{name.replace('_', '-')}" for name in FLAG_NAMES
             if getattr(args, name, None) is not None]
    if not getattr(args, "random_ltd", False):
        if given:
            raise ValueError(f"{given} given without --random-ltd")
        return RandomLTDConfig(enabled=False)
    config = RandomLTDConfig(
        enabled=True, layer_ids=(None if args.random_ltd_layer_ids is None
                                 else tuple(args.random_ltd_layer_ids)),
        layer_num=args.random_ltd_layer_num,
        min_seqlen=_default(args.random_ltd_min_seqlen, DEFAULT_MIN_SEQLEN),
        max_seqlen=seq_length, total_steps=args.random_ltd_total_steps,
        seq_per_step=_default(args.random_ltd_seq_per_step, DEFAULT_SEQ_PER_STEP))
    config.resolve_layer_ids(num_layers)  # errors early, naming the flag
    return config


def _default(value, default):
    return default if value is None else value
