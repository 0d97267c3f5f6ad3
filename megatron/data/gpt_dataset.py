"""GPT pretraining samples: fixed-length token windows over shuffled documents (Megatron's).

Three index maps define the samples (see docs/CONTRACTS.md):

* ``doc_idx``     int32 [epochs * docs]   document (sequence) order over all epochs, shuffled;
* ``sample_idx``  int32 [n + 1, 2]        where each sample starts: (position in doc_idx, offset);
* ``shuffle_idx`` int64 [n]               sample ``idx`` reads window ``shuffle_idx[idx]``.

The maps are cached as ``.npy`` files named by every parameter they depend on and built under a
file lock, so many ranks starting together build them once.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import torch

from .blendable_dataset import blend_splits
from .dataset_utils import (build_doc_idx, build_sample_idx, build_shuffle_idx,
                            get_datasets_weights_and_num_samples, get_train_valid_test_split_,
                            load_given_maps, load_or_build_cached, log_rank_0, num_epochs_for)
from .indexed_dataset import MMapIndexedDataset

_SPLIT_NAMES = ("train", "valid", "test")


def build_train_valid_test_datasets(data_prefix: list[str], splits_string: str,
                                    train_valid_test_num_samples: list[int], seq_length: int,
                                    seed: int, cache_dir: str | None = None,
                                    train_index_maps: dict[str, str] | None = None):
    """Train / valid / test datasets of one prefix or of a weighted blend ``[w1, p1, w2, p2, ...]``.

    ``train_index_maps`` (``{flag: path}`` of the train split's doc / sample / shuffle
    index, Megatron-DeepSpeed's ``--train-{doc,sample,shuffle}-idx-path``) are loaded
    instead of built; one prefix only.

    Returns a tuple of three datasets (``GPTDataset`` or ``BlendableDataset``); a split with no
    documents is ``None``.
    """
    if len(data_prefix) == 1:
        return _build_single(data_prefix[0], splits_string, train_valid_test_num_samples,
                             seq_length, seed, cache_dir, train_index_maps)
    if train_index_maps:
        raise ValueError(f"{sorted(train_index_maps)} name the maps of one dataset; "
                         f"--data-path blends {len(data_prefix) // 2} prefixes")
    prefixes, weights, per_dataset = get_datasets_weights_and_num_samples(
        data_prefix, train_valid_test_num_samples)
    parts = [_build_single(p, splits_string, n, seq_length, seed, cache_dir)
             for p, n in zip(prefixes, per_dataset)]
    return blend_splits(parts, weights, train_valid_test_num_samples, splits_string)


def _build_single(prefix: str, splits_string: str, num_samples: list[int], seq_length: int,
                  seed: int, cache_dir: str | None, train_index_maps: dict[str, str] | None = None):
    indexed = MMapIndexedDataset(prefix)
    total = len(indexed.sizes)  # as in Megatron, every sequence of the store is a document
    bounds = get_train_valid_test_split_(splits_string, total)
    log_rank_0(f" > dataset {prefix}: {total} documents; splits "
               + ", ".join(f"{n} [{bounds[i]}, {bounds[i + 1]})" for i, n in enumerate(_SPLIT_NAMES)))
    datasets = []
    for i, name in enumerate(_SPLIT_NAMES):
        if bounds[i + 1] <= bounds[i]:
            datasets.append(None)
            continue
        documents = np.arange(bounds[i], bounds[i + 1], dtype=np.int32)
        datasets.append(GPTDataset(name, prefix, documents, indexed, num_samples[i], seq_length,
                                   seed, cache_dir, train_index_maps if name == "train" else None))
    return tuple(datasets)


class GPTDataset(torch.utils.data.Dataset):
    """Samples of ``seq_length + 1`` tokens cut from the documents of one split.

    Args:
        name: split name (part of the cache file names).
        data_prefix: the token store's path prefix.
        documents: int32 [docs] sequence indices of the store that form this split.
        indexed_dataset: the opened store.
        num_samples: samples wanted; enough epochs are made for at least this many.
        seq_length: tokens per sample minus one (inputs and shifted labels share them).
        seed: shuffling seed.
        cache_dir: where to cache the index maps (default: beside the data).
        given_maps: ``{flag: path}`` of a doc / sample / shuffle index to load instead of
            building them (checked against the split; the dataset is as long as they say).
    """

    def __init__(self, name: str, data_prefix: str, documents: np.ndarray,
                 indexed_dataset: MMapIndexedDataset, num_samples: int, seq_length: int,
                 seed: int, cache_dir: str | None = None,
                 given_maps: dict[str, str] | None = None) -> None:
        if seq_length < 1 or num_samples < 0:
            raise ValueError(f"{data_prefix}: need seq_length >= 1 and num_samples >= 0")
        documents = np.asarray(documents, dtype=np.int32)
        if len(documents) == 0 or documents.min() < 0 or documents.max() >= len(indexed_dataset):
            raise ValueError(f"{data_prefix}: {name} documents must be non-empty and within "
                             f"0..{len(indexed_dataset) - 1}")
        self.name, self.indexed_dataset, self.documents = name, indexed_dataset, documents
        self.seq_length = seq_length
        if given_maps:
            self.doc_idx, self.sample_idx, self.shuffle_idx = load_given_maps(
                given_maps, f"{name} index maps of {data_prefix}")
            _check_given_maps(self, given_maps)
        else:
            self.doc_idx, self.sample_idx, self.shuffle_idx = load_or_build_index_maps(
                name, data_prefix, documents, indexed_dataset.sizes, num_samples, seq_length,
                seed, cache_dir)

    def __len__(self) -> int:
        return len(self.sample_idx) - 1

    def __getitem__(self, idx: int) -> dict:
        """``{"text": int64 [seq_length + 1], "sample_id": idx}``."""
        n = len(self)
        if not 0 <= idx < n:
            raise IndexError(f"sample {idx} out of range for the {self.name} dataset of {n} samples")
        i = int(self.shuffle_idx[idx])
        df, of = (int(x) for x in self.sample_idx[i])
        dl, ol = (int(x) for x in self.sample_idx[i + 1])
        get = self.indexed_dataset.get
        if df == dl:
            text = get(int(self.doc_idx[df]), offset=of, length=ol - of + 1)
        else:
            parts = [get(int(self.doc_idx[df]), offset=of)]
            parts += [get(int(d)) for d in self.doc_idx[df + 1:dl]]
            parts.append(get(int(self.doc_idx[dl]), length=ol + 1))
            text = np.concatenate(parts)
        return {"text": np.asarray(text, dtype=np.int64), "sample_id": idx}


def _check_given_maps(ds: GPTDataset, flags: dict[str, str]) -> None:
    """Loaded maps must describe samples of ``seq_length + 1`` tokens of the split's documents."""
    doc_flag, sample_flag, shuffle_flag = flags
    lo, hi = int(ds.documents.min()), int(ds.documents.max())
    problems = []
    if ds.doc_idx.ndim != 1 or len(ds.doc_idx) == 0 or ds.doc_idx.min() < lo \
            or ds.doc_idx.max() > hi:
        problems.append(f"{doc_flag}: document ids must lie in the {ds.name} split's {lo}..{hi}")
    si = ds.sample_idx
    if si.ndim != 2 or si.shape[1] != 2 or len(si) < 2 or si[:, 0].max() >= len(ds.doc_idx) \
            or np.any(np.diff(si[:, 0].astype(np.int64)) < 0):
        problems.append(f"{sample_flag}: expected [samples + 1, 2] (doc_idx position, offset) "
                        f"rows in order within the {len(ds.doc_idx)} doc_idx entries")
    sh = ds.shuffle_idx
    if sh.ndim != 1 or len(sh) != len(si) - 1 or sh.min() < 0 or sh.max() >= len(si) - 1:
        problems.append(f"{shuffle_flag}: expected {len(si) - 1} sample numbers (one per "
                        f"{sample_flag} sample) within 0..{len(si) - 2}")
    if problems:
        raise ValueError("; ".join(problems))


def index_map_stem(name: str, data_prefix: str, documents: np.ndarray, sizes: np.ndarray,
                   num_samples: int, seq_length: int, seed: int, cache_dir: str | None) -> str:
    """Cache path stem of the maps, named by everything they depend on.

    The short hash covers the documents and their sizes (all the maps depend on), so maps
    built for other or rewritten data under the same prefix are never reused.
    """
    key = hashlib.sha1(os.path.abspath(data_prefix).encode())
    key.update(np.array([len(documents), len(sizes)], dtype=np.int64).tobytes())
    for lo in range(0, len(documents), 1 << 22):  # chunks keep the temporaries small
        chunk = np.ascontiguousarray(documents[lo:lo + (1 << 22)], dtype=np.int32)
        key.update(chunk.tobytes())
        key.update(np.ascontiguousarray(sizes[chunk], dtype=np.int32).tobytes())
    folder = cache_dir or os.path.dirname(os.path.abspath(data_prefix))
    return os.path.join(folder, f"{os.path.basename(data_prefix)}_{name}_indexmap_{num_samples}ns_"
                        f"{seq_length}sl_{seed}s_{key.hexdigest()[:10]}")


def load_or_build_index_maps(name: str, data_prefix: str, documents: np.ndarray,
                             sizes: np.ndarray, num_samples: int, seq_length: int, seed: int,
                             cache_dir: str | None = None):
    """The cached ``(doc_idx, sample_idx, shuffle_idx)``, built once under a file lock if missing."""
    stem = index_map_stem(name, data_prefix, documents, sizes, num_samples, seq_length, seed,
                          cache_dir)
    return load_or_build_cached(
        stem, ("doc_idx", "sample_idx", "shuffle_idx"),
        lambda: build_index_maps(documents, sizes, num_samples, seq_length, seed),
        f"{name} index maps of {data_prefix}")


def build_index_maps(documents: np.ndarray, sizes: np.ndarray, num_samples: int,
                     seq_length: int, seed: int):
    """``(doc_idx, sample_idx, shuffle_idx)`` exactly as Megatron's ``_build_index_mappings``."""
    tokens_per_epoch = int(sizes[documents].sum(dtype=np.int64))
    num_epochs = num_epochs_for(tokens_per_epoch, seq_length, num_samples)
    rng = np.random.RandomState(seed=seed)
    separate_last_epoch = False
    if num_epochs > 1:
        # Shuffle a short last epoch separately if it is used for less than 80% of an epoch.
        from_full_epochs = ((num_epochs - 1) * tokens_per_epoch - 1) // seq_length
        per_epoch = (tokens_per_epoch - 1) // seq_length
        separate_last_epoch = (num_samples - from_full_epochs) < int(0.80 * per_epoch)
    doc_idx = build_doc_idx(documents, num_epochs, rng, separate_last_epoch)
    sample_idx = build_sample_idx(sizes, doc_idx, seq_length, num_epochs, tokens_per_epoch)
    total = len(sample_idx) - 1
    first = from_full_epochs if separate_last_epoch else total
    shuffle_idx = build_shuffle_idx(first, total, rng)
    return doc_idx, sample_idx, shuffle_idx
