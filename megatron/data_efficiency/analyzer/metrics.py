"""Metric names and user-supplied metric functions.

Built-in metrics:
    seqlen            effective tokens of the sample (tokens equal to ``pad_token_id`` excluded), int64
    total_vocab_freq  token histogram over the whole data, ``DIR/total_vocab_freq/counts.npy``
    voc               vocabulary rarity, sum over the sample's tokens of -ln p(token) with p from
                      total_vocab_freq (a second pass), float64
    seqlen_voc        int64 key ordering by seqlen first, rarity as tie-break
                      (``(seqlen << bits) + (rarity_fixed_point >> shift)``, see meta.json)

User metrics (``--metric-fn [name=]module:function``). The contract::

    def function(tokens: np.ndarray, offsets: np.ndarray) -> array-like
        tokens:  1-D array of token ids (the store's dtype, read-only) holding a batch of
                 n samples back to back
        offsets: int64 [n + 1]; sample k is tokens[offsets[k]:offsets[k+1]] (may be empty)
        returns: n real numbers, one per sample, all finite. Integer (or bool) results are
                 stored as int64; if any batch returns floats the metric is stored as float64.

The function is called on batches of about ``batch_tokens`` tokens, in an order that depends
on the number of ranks, so it must be a pure function of each sample's tokens. The metric is
named ``name`` if given, else the function's ``__name__``.
"""

from __future__ import annotations

import importlib
import re
from typing import Callable

import numpy as np

BUILTIN_METRICS = ("seqlen", "total_vocab_freq", "voc", "seqlen_voc")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def parse_metric_fn(spec: str) -> tuple[str, str]:
    """``[name=]module:function`` -> (metric name, "module:function"); ValueError if malformed."""
    name, _, target = spec.rpartition("=") if "=" in spec else ("", "", spec)
    module, sep, func = target.partition(":")
    if not sep or not module or not func:
        raise ValueError(f"--metric-fn {spec!r}: expected [name=]module:function")
    name = name or func.rsplit(".", 1)[-1]
    if not _NAME.match(name) or name in BUILTIN_METRICS:
        raise ValueError(f"--metric-fn {spec!r}: metric name {name!r} must be a plain file name "
                         f"and not one of the built-ins {BUILTIN_METRICS}")
    return name, target


def load_metric_fn(target: str) -> Callable:
    """Import ``module:function`` (the function may be a dotted attribute path)."""
    module_name, _, attr = target.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"--metric-fn {target}: cannot import module {module_name!r}: {e}") from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"--metric-fn {target}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"--metric-fn {target}: {attr!r} is not callable")
    return obj


def evaluate_user_metric(fn: Callable, name: str, tokens: np.ndarray, offsets: np.ndarray,
                         first_id: int) -> np.ndarray:
    """Call ``fn`` on one batch and validate the result.

    Args:
        first_id: sample id of the batch's first sample (for error messages).

    Returns:
        int64 or float64 [n].
    """
    n = len(offsets) - 1
    tokens = tokens.view()
    tokens.flags.writeable = False
    try:
        out = np.asarray(fn(tokens, offsets))
    except Exception as e:
        raise ValueError(f"metric {name}: the function failed on samples {first_id}..{first_id + n - 1}: "
                         f"{type(e).__name__}: {e}") from e
    if out.ndim != 1 or len(out) != n:
        raise ValueError(f"metric {name}: returned shape {out.shape} for a batch of {n} samples "
                         f"(ids {first_id}..{first_id + n - 1}); expected one value per sample")
    if out.dtype.kind in "biu":
        return out.astype(np.int64)
    if out.dtype.kind != "f":
        raise ValueError(f"metric {name}: returned dtype {out.dtype}; expected real numbers")
    out = out.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(out))
    if len(bad):
        k = int(bad[0])
        raise ValueError(f"metric {name}: sample {first_id + k} has non-finite value {out[k]}")
    return out + 0.0  # -0.0 -> 0.0
