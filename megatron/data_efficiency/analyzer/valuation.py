"""What a metric rewards: the distribution of an analyzer index and its extreme samples.

Used by ``tools/inspect_index.py`` before pruning or windowing with a metric; also home of
``random_rank``, the random control metric the study's ``prune_random50`` arm windows on.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np

from megatron.data_efficiency.analyzer.index_io import MetricIndex

QUANTILES = (0.0, 0.01, 0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.99, 1.0)


def quantiles(index: MetricIndex, qs=QUANTILES) -> list[tuple[float, float]]:
    """``(q, value)``: the value at sorted position ``floor(q * (N - 1))`` (no interpolation:
    every value shown is a real sample's)."""
    n = index.num_samples
    if n == 0:
        return []
    return [(q, index.value_at(int(np.floor(q * (n - 1))))) for q in qs]


def mean(index: MetricIndex) -> float:
    """The mean value over samples (for the ``loss`` metric of equal-length GPT samples: the
    mean token loss of the indexed data under the reference checkpoint)."""
    n = index.num_samples
    if n == 0:
        return float("nan")
    counts = np.diff(np.asarray(index.offsets, dtype=np.int64))
    return float(np.dot(np.asarray(index.values, dtype=np.float64), counts) / n)


def extremes(index: MetricIndex, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` easiest ids (lowest first) and ``k`` hardest (highest first)."""
    ss = index.sorted_samples
    k = min(int(k), index.num_samples)
    return np.asarray(ss[:k], dtype=np.int64), np.asarray(ss[len(ss) - k:][::-1], dtype=np.int64)


def histogram_png(index: MetricIndex, path: str, bins: int = 60) -> None:
    """A PNG histogram of the metric's values (the sample counts per bin), written to a
    temporary name and renamed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    values = np.asarray(index.values, dtype=np.float64)
    counts = np.diff(np.asarray(index.offsets))
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.hist(values, bins=bins, weights=counts, color="#3a6ea5")
    ax.set_xlabel(f"{index.metric} value")
    ax.set_ylabel("samples")
    ax.set_title(f"{index.metric}: {index.num_samples:,} samples ({os.path.basename(index.path)})")
    for q in (0.25, 0.5, 0.75):
        ax.axvline(index.value_at(int(q * (index.num_samples - 1))), color="k", lw=0.8, ls="--")
    fig.tight_layout()
    tmp = f"{path}.tmp{os.getpid()}.png"
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, path)


def random_rank(tokens: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The random control of pruning, as an analyzer user metric (``--metric-fn
    random=megatron.data_efficiency.analyzer.valuation:random_rank``): each sample's value
    is uniform in [0, 1), taken from a BLAKE2 hash of its tokens, so it is a pure function
    of the sample (the same on any number of ranks, batches or runs) and unrelated to its
    difficulty. A window ``[0, 50]`` over it keeps a random half.     # float64 [n]"""
    out = np.empty(len(offsets) - 1, dtype=np.float64)
    for k in range(len(out)):
        digest = hashlib.blake2b(tokens[offsets[k]:offsets[k + 1]].tobytes(), digest_size=8)
        out[k] = (int.from_bytes(digest.digest(), "little") >> 11) / 2.0 ** 53  # 53 bits: < 1
    return out
