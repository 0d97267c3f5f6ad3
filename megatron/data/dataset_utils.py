"""Split and blend parsing plus the index-map helpers of Megatron's datasets (pure numpy)."""

from __future__ import annotations

import fcntl
import math
import os
import re
import time
from typing import Callable, Sequence

import numpy as np

# Megatron builds each blended dataset with 0.5% more samples than its share, so that the greedy
# interleaving in BlendableDataset never asks a dataset for a sample past its end.
BLEND_HEADROOM = 1.005


def log_rank_0(msg: str) -> None:
    """Print once per job: on global rank 0, or always when not distributed."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        print(msg, flush=True)


def load_or_build_cached(stem: str, names: Sequence[str],
                         build: Callable[[], Sequence[np.ndarray]], what: str) -> tuple:
    """Arrays cached as ``{stem}_{name}.npy``, built by ``build()`` once if missing.

    Files are published by rename, so existing ones are complete and load without a lock. A
    builder holds an exclusive ``fcntl`` lock on ``{stem}.lock``; processes that start together
    queue on it and then find the arrays built. An unwritable folder means building in memory.
    Arrays are returned memory-mapped read-only.
    """
    paths = [f"{stem}_{n}.npy" for n in names]

    def load():
        return tuple(np.load(p, mmap_mode="r", allow_pickle=False) for p in paths)

    if all(os.path.isfile(p) for p in paths):
        return load()
    folder = os.path.dirname(stem)
    try:
        os.makedirs(folder, exist_ok=True)
        lock_file = open(stem + ".lock", "a+")
    except OSError as e:
        log_rank_0(f" > WARNING: cannot cache {what} in {folder} ({e}); building in memory")
        return tuple(build())
    with lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # released when the file is closed
        if not all(os.path.isfile(p) for p in paths):
            start = time.time()
            for path, array in zip(paths, build()):
                tmp = f"{path}.tmp{os.getpid()}.npy"
                np.save(tmp, array, allow_pickle=False)
                os.replace(tmp, path)
            log_rank_0(f" > built {what} in {time.time() - start:.2f}s, cached at {stem}_*.npy")
        return load()


def load_given_maps(paths: dict[str, str], what: str) -> tuple:
    """Sample maps named by flags (Megatron-DeepSpeed's ``--train-*-idx-path``), memory-mapped
    read-only in the order of ``paths`` (``{flag: path}``); a missing or unreadable file is
    an error naming its flag."""
    out = []
    for flag, path in paths.items():
        try:
            out.append(np.load(path, mmap_mode="r", allow_pickle=False))
        except (OSError, ValueError) as err:
            raise ValueError(f"{flag} {path}: cannot read the {what} ({err})") from None
    log_rank_0(f" > loaded the {what} from " + ", ".join(paths.values()))
    return tuple(out)


def parse_splits_string(splits_string: str) -> list[float]:
    """``"969,30,1"`` (or ``"98/2/0"``, ``"100"``) -> three non-negative fractions summing to 1."""
    parts = [p for p in re.split(r"[,/]", splits_string.strip()) if p.strip()]
    try:
        splits = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"--split {splits_string!r}: expected numbers separated by ',' or '/'") from None
    if not splits or len(splits) > 3 or any(s < 0 for s in splits) or sum(splits) <= 0:
        raise ValueError(f"--split {splits_string!r}: give 1 to 3 non-negative weights with a "
                         "positive sum, e.g. 969,30,1")
    splits += [0.0] * (3 - len(splits))
    total = sum(splits)
    return [s / total for s in splits]


def get_train_valid_test_split_(splits_string: str, size: int) -> list[int]:
    """Document boundaries ``[0, a, b, size]`` of train / valid / test, exactly as Megatron.

    Each split gets ``round(fraction * size)`` documents; the rounding error is taken from the
    last boundaries so that the ranges always cover ``0 .. size``.
    """
    splits = parse_splits_string(splits_string)
    index = [0]
    for s in splits:
        index.append(index[-1] + int(round(s * float(size))))
    diff = index[-1] - size
    return [index[0]] + [i - diff for i in index[1:]]


def get_datasets_weights_and_num_samples(data_prefix: Sequence[str],
                                         train_valid_test_num_samples: Sequence[int]
                                         ) -> tuple[list[str], list[float], list[list[int]]]:
    """Parse ``w1 p1 w2 p2 ...``: prefixes, normalised weights, per-dataset sample counts.

    Each dataset is asked for ``ceil(n * weight * 1.005)`` samples of every split.
    """
    if len(data_prefix) % 2:
        raise ValueError(f"--data-path {' '.join(data_prefix)}: a blend needs weight/prefix pairs")
    weights, prefixes = [], []
    for w, p in zip(data_prefix[0::2], data_prefix[1::2]):
        try:
            weights.append(float(w))
        except ValueError:
            raise ValueError(f"--data-path: {w!r} (before {p!r}) is not a weight") from None
        prefixes.append(p.strip())
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"--data-path: weights {weights} must be non-negative with a positive sum")
    total = sum(weights)
    weights = [w / total for w in weights]
    num_samples = [[int(math.ceil(n * w * BLEND_HEADROOM)) for n in train_valid_test_num_samples]
                   for w in weights]
    return prefixes, weights, num_samples


def num_epochs_for(tokens_per_epoch: int, seq_length: int, num_samples: int) -> int:
    """Fewest epochs whose tokens give ``num_samples`` samples of ``seq_length + 1`` tokens.

    Consecutive samples share one token, so ``T`` tokens give ``(T - 1) // seq_length`` samples.
    """
    if tokens_per_epoch <= 1:
        raise ValueError(f"the documents hold only {tokens_per_epoch} tokens; cannot build samples")
    need = num_samples * seq_length + 1  # tokens for num_samples samples
    return max(1, -(-need // tokens_per_epoch))


def build_doc_idx(documents: np.ndarray, num_epochs: int, rng: np.random.RandomState,
                  separate_last_epoch: bool) -> np.ndarray:
    """Document order over all epochs, shuffled as Megatron does (int32 [epochs * docs]).

    All epochs are shuffled together; with ``separate_last_epoch`` the last epoch is shuffled
    on its own so that a small remainder epoch does not over-sample a few documents.
    """
    if not separate_last_epoch or num_epochs == 1:
        doc_idx = np.tile(np.asarray(documents, dtype=np.int32), num_epochs)
        rng.shuffle(doc_idx)
        return doc_idx
    first = build_doc_idx(documents, num_epochs - 1, rng, False)
    last = build_doc_idx(documents, 1, rng, False)
    return np.concatenate((first, last))


def build_sample_idx(sizes: np.ndarray, doc_idx: np.ndarray, seq_length: int,
                     num_epochs: int, tokens_per_epoch: int) -> np.ndarray:
    """Start of every sample as ``(position in doc_idx, token offset)``: int32 [n + 1, 2].

    Vectorised equivalent of Megatron's C++ ``build_sample_idx``: sample ``k`` ends at global
    token ``k * seq_length`` of the documents laid end to end in ``doc_idx`` order, and row ``k``
    is the document holding that token and the token's offset in it. Empty documents hold no
    token and are stepped over, as the C++ loop does.
    """
    num_samples = (num_epochs * tokens_per_epoch - 1) // seq_length
    lengths = sizes[doc_idx].astype(np.int64)
    ends = np.cumsum(lengths)                                   # [epochs * docs]
    positions = np.arange(num_samples + 1, dtype=np.int64) * seq_length
    where = np.searchsorted(ends, positions, side="right")
    offsets = positions - (ends[where] - lengths[where])
    dtype = np.int32 if len(doc_idx) < np.iinfo(np.int32).max else np.int64
    sample_idx = np.empty((num_samples + 1, 2), dtype=dtype)
    sample_idx[:, 0] = where
    sample_idx[:, 1] = offsets
    sample_idx[0] = 0  # the C++ loop starts at (0, 0) even when the first document is empty
    return sample_idx


def build_shuffle_idx(num_samples: int, total_size: int, rng: np.random.RandomState) -> np.ndarray:
    """Random order of the samples: int64 [total_size].

    The first ``num_samples`` are shuffled among themselves and the rest separately, so that
    samples of a separated last epoch are only drawn after the full epochs.
    """
    first = np.arange(num_samples, dtype=np.int64)
    rng.shuffle(first)
    if num_samples == total_size:
        return first
    last = np.arange(num_samples, total_size, dtype=np.int64)
    rng.shuffle(last)
    return np.concatenate((first, last))


def build_blending_indices(weights: Sequence[float], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Megatron's greedy blend: sample ``i`` comes from the dataset furthest below its share.

    Returns ``dataset_index`` uint8 [size] and ``dataset_sample_index`` int64 [size]. At step
    ``i`` dataset ``d``'s error is ``w_d * max(i, 1) - picked_d`` (float64, as Megatron's C++);
    the largest error wins, ties going to the lower dataset index.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or len(w) == 0 or len(w) > 255 or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"blend weights {list(weights)} must be 1..255 non-negative numbers "
                         "with a positive sum")
    w = w / w.sum()
    if len(w) == 1:
        which = np.zeros(size, dtype=np.uint8)
    elif len(w) == 2:
        which = _blend_two(w, size)
    else:
        which = _blend_loop(w.tolist(), size)
    sample_index = np.empty(size, dtype=np.int64)
    for d in range(len(w)):
        mask = which == d
        sample_index[mask] = np.arange(int(mask.sum()), dtype=np.int64)
    return which, sample_index


def _blend_loop(w: list[float], size: int) -> np.ndarray:
    """The greedy, one step per sample (any number of datasets)."""
    which = np.empty(size, dtype=np.uint8)
    counts = [0] * len(w)
    for i in range(size):
        s = float(max(i, 1))
        best, best_err = 0, w[0] * s - counts[0]
        for d in range(1, len(w)):
            err = w[d] * s - counts[d]
            if err > best_err:
                best, best_err = d, err
        which[i] = best
        counts[best] += 1
    return which


def _blend_two(w: np.ndarray, size: int, window: int = 1 << 16) -> np.ndarray:
    """The same greedy for two datasets, vectorised by guess-and-verify.

    Dataset ``d``'s next picks fall near times ``(picked_d + m) / w_d``; that guess for a window is
    checked against the exact greedy rule, accepted up to its first disagreement, and the
    greedy's own choice is taken there. Every accepted step satisfies the exact rule, so the
    result equals ``_blend_loop``; the guess only decides the speed.
    """
    which = np.empty(size, dtype=np.uint8)
    pos, c0 = 0, 0  # steps done, picks of dataset 0 so far
    while pos < size:
        n = min(window, size - pos)
        keys = [(np.arange(int(w[d] * n) + 2) + (c0 if d == 0 else pos - c0)) / max(w[d], 1e-300)
                for d in (0, 1)]
        ds = np.concatenate([np.zeros(len(keys[0]), np.uint8), np.ones(len(keys[1]), np.uint8)])
        guess = ds[np.lexsort((ds, np.concatenate(keys)))][:n]
        steps = pos + np.arange(n, dtype=np.int64)
        before0 = c0 + np.concatenate(([0], np.cumsum(guess == 0)[:-1]))  # picks of 0 before each step
        s = np.maximum(steps, 1).astype(np.float64)
        err0 = w[0] * s - before0.astype(np.float64)
        err1 = w[1] * s - (steps - before0).astype(np.float64)
        greedy = np.where(err1 > err0, 1, 0).astype(np.uint8)
        bad = np.flatnonzero(greedy != guess)
        keep = n if len(bad) == 0 else int(bad[0]) + 1  # the greedy's choice at the first miss is exact
        which[pos:pos + keep] = greedy[:keep]
        c0 += int(np.count_nonzero(greedy[:keep] == 0))
        pos += keep
    return which
