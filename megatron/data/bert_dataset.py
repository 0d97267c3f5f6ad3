"""BERT pretraining samples: sentence pairs with next-sentence labels and masked tokens.

The store must be sentence-level (``preprocess_data.py --split-sentences``): each sequence a
sentence, ``doc_idx`` the document boundaries. As in Megatron:

* a *samples mapping* int64 [n, 3] of ``(first sentence, end sentence, target length)`` groups
  consecutive sentences of one document until a target length (``max_seq_length - 3``, or with
  probability ``short_seq_prob`` a random shorter one) is reached; epochs repeat until
  ``num_samples`` groups exist; the groups are shuffled;
* sample ``idx`` splits its group into segments A and B at a random sentence and swaps them
  with probability 1/2 (``is_random`` = 1); the pair is truncated to the target length, wrapped
  as ``[CLS] A [SEP] B [SEP]``, and 15% of the tokens are chosen for prediction: 80% become
  ``[MASK]``, 10% a random token, 10% stay; all randomness comes from
  ``RandomState(seed + idx)``, so a sample is the same in every run and on every rank.

Deviation from Megatron: masking picks single tokens (no n-gram / whole-word masking), and
the mapping uses numpy's RNG instead of the C++ helper's, so sample contents differ from
Megatron-LM's for the same seed.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import torch

from .blendable_dataset import blend_splits
from .dataset_utils import (get_datasets_weights_and_num_samples, get_train_valid_test_split_,
                            load_given_maps, load_or_build_cached, log_rank_0)
from .indexed_dataset import MMapIndexedDataset

LONG_SENTENCE_LEN = 512  # documents with a longer sentence are skipped, as in Megatron


def build_samples_mapping(doc_idx: np.ndarray, sizes: np.ndarray, num_samples: int,
                          max_seq_length: int, short_seq_prob: float, seed: int,
                          binary_head: bool = True) -> np.ndarray:
    """Groups of consecutive sentences: int64 [n >= num_samples, 3] (start, end, target), shuffled.

    Args:
        doc_idx: int64 [D+1] sentence boundaries of the split's documents.
        sizes: int32 [sentences] tokens per sentence.
        max_seq_length: target tokens per group (special tokens excluded).
    """
    rng = np.random.RandomState(seed)
    min_sentences = 2 if binary_head else 1
    doc_idx = np.asarray(doc_idx, dtype=np.int64)
    counts = np.diff(doc_idx)
    usable = counts >= min_sentences
    longest = np.zeros(len(counts), dtype=np.int64)
    nonempty = counts > 0
    if nonempty.any():
        longest[nonempty] = np.maximum.reduceat(sizes[:doc_idx[-1]], doc_idx[:-1][nonempty])
    usable &= longest <= LONG_SENTENCE_LEN
    docs = np.flatnonzero(usable)
    if len(docs) == 0:
        raise ValueError(f"no document has {min_sentences}+ sentences of at most "
                         f"{LONG_SENTENCE_LEN} tokens; BERT needs --split-sentences data")
    ratio = int(round(1.0 / short_seq_prob)) if short_seq_prob > 0 else 0

    def target() -> int:
        if ratio and rng.randint(ratio) == 0:
            return int(rng.randint(2, max_seq_length + 1))
        return max_seq_length

    groups: list[tuple[int, int, int]] = []
    while len(groups) < max(num_samples, 1):  # whole epochs, as Megatron
        for d in docs:
            first, last = int(doc_idx[d]), int(doc_idx[d + 1])
            start, length, goal = first, 0, target()
            for sent in range(first, last):
                length += int(sizes[sent])
                remaining = last - sent - 1
                if remaining == 0 or (length >= goal and remaining > 1
                                      and sent + 1 - start >= min_sentences):
                    groups.append((start, sent + 1, goal))
                    start, length, goal = sent + 1, 0, target()
    mapping = np.asarray(groups, dtype=np.int64)
    return mapping[np.random.RandomState(seed + 1).permutation(len(mapping))]


def mask_tokens(tokens: list[int], special: set[int], vocab_size: int, mask_id: int,
                masked_lm_prob: float, max_predictions: int, rng: np.random.RandomState):
    """BERT masking of ``round(prob * len)`` (1 .. max_predictions) non-special positions.

    Returns ``(tokens, positions, labels)`` with positions ascending.
    """
    candidates = [i for i, t in enumerate(tokens) if t not in special]
    n = min(max_predictions, max(1, int(round(len(tokens) * masked_lm_prob))), len(candidates))
    positions = sorted(rng.permutation(candidates)[:n].tolist()) if n else []
    out = list(tokens)
    labels = []
    for p in positions:
        labels.append(tokens[p])
        r = rng.random_sample()
        if r < 0.8:
            out[p] = mask_id
        elif r >= 0.9:
            out[p] = int(rng.randint(vocab_size))
    return out, positions, labels


def _truncate(a: list[int], b: list[int], max_tokens: int, rng: np.random.RandomState) -> bool:
    """Trim the longer segment, at a random end, until both fit in ``max_tokens``."""
    if len(a) + len(b) <= max_tokens:
        return False
    while len(a) + len(b) > max_tokens:
        seg = a if len(a) > len(b) else b
        if rng.random_sample() < 0.5:
            del seg[0]
        else:
            seg.pop()
    return True


class BertDataset(torch.utils.data.Dataset):
    """Masked-LM + next-sentence samples of ``max_seq_length`` tokens (Megatron's).

    ``tokenizer`` supplies ``cls``, ``sep``, ``mask``, ``pad`` and ``vocab_size``.
    """

    def __init__(self, name: str, indexed_dataset: MMapIndexedDataset, data_prefix: str,
                 doc_idx: np.ndarray, num_samples: int, masked_lm_prob: float,
                 max_seq_length: int, short_seq_prob: float, seed: int, tokenizer,
                 binary_head: bool = True, cache_dir: str | None = None,
                 given_mapping: dict[str, str] | None = None) -> None:
        if max_seq_length < 8:
            raise ValueError(f"BERT max_seq_length {max_seq_length} is too short")
        self.name, self.indexed_dataset, self.seed = name, indexed_dataset, seed
        self.max_seq_length, self.masked_lm_prob = max_seq_length, masked_lm_prob
        self.binary_head = binary_head
        self.cls, self.sep, self.mask, self.pad = (tokenizer.cls, tokenizer.sep, tokenizer.mask,
                                                   tokenizer.pad)
        self.vocab_size = tokenizer.vocab_size
        doc_idx = np.asarray(doc_idx, dtype=np.int64)
        key = hashlib.sha1(doc_idx[[0, -1]].tobytes() + np.int64(len(doc_idx)).tobytes()
                           + os.path.abspath(data_prefix).encode()).hexdigest()[:10]
        folder = cache_dir or os.path.dirname(os.path.abspath(data_prefix))
        stem = os.path.join(folder, f"{os.path.basename(data_prefix)}_{name}_bert_{num_samples}ns_"
                            f"{max_seq_length}msl_{short_seq_prob:g}ssp_{seed}s_"
                            f"{int(binary_head)}bh_{key}")
        if given_mapping:   # Megatron-DeepSpeed's --train-idx-path
            (self.samples_mapping,) = load_given_maps(given_mapping, f"{name} BERT samples "
                                                                     f"mapping of {data_prefix}")
            _check_given_mapping(self.samples_mapping, doc_idx, given_mapping)
            return
        (self.samples_mapping,) = load_or_build_cached(
            stem, ("samples_mapping",),
            lambda: (build_samples_mapping(doc_idx, indexed_dataset.sizes, num_samples,
                                           max_seq_length - 3, short_seq_prob, seed,
                                           binary_head),),
            f"{name} BERT samples mapping of {data_prefix}")

    def __len__(self) -> int:
        return len(self.samples_mapping)

    def _segments(self, sentences: list[list[int]], rng: np.random.RandomState):
        if not self.binary_head:
            return [t for s in sentences for t in s], [], False
        a_end = int(rng.randint(1, len(sentences))) if len(sentences) >= 3 else 1
        a = [t for s in sentences[:a_end] for t in s]
        b = [t for s in sentences[a_end:] for t in s]
        if rng.random_sample() < 0.5:
            return b, a, True
        return a, b, False

    def __getitem__(self, idx: int) -> dict:
        """Dict of int64 arrays ``text, types, labels, loss_mask, padding_mask`` [max_seq_length]
        and ints ``is_random, truncated, sample_id``; ``labels`` is -1 where nothing is predicted."""
        start, end, target = (int(x) for x in self.samples_mapping[idx])
        rng = np.random.RandomState((self.seed + idx) % 2**32)
        sentences = [self.indexed_dataset[i].tolist() for i in range(start, end)]
        a, b, is_random = self._segments(sentences, rng)
        truncated = _truncate(a, b, target, rng)
        tokens = [self.cls] + a + [self.sep] + (b + [self.sep] if b else [])
        types = [0] * (len(a) + 2) + [1] * (len(b) + 1 if b else 0)
        tokens, positions, labels = mask_tokens(
            tokens, {self.cls, self.sep}, self.vocab_size, self.mask, self.masked_lm_prob,
            max(1, int(self.masked_lm_prob * target)), rng)
        n, pad = len(tokens), self.max_seq_length - len(tokens)
        label_arr = np.full(self.max_seq_length, -1, dtype=np.int64)
        label_arr[positions] = labels
        loss_mask = np.zeros(self.max_seq_length, dtype=np.int64)
        loss_mask[positions] = 1
        return {"text": np.array(tokens + [self.pad] * pad, dtype=np.int64),
                "types": np.array(types + [self.pad] * pad, dtype=np.int64),
                "labels": label_arr, "is_random": int(is_random), "loss_mask": loss_mask,
                "padding_mask": np.array([1] * n + [0] * pad, dtype=np.int64),
                "truncated": int(truncated), "sample_id": idx}


def _check_given_mapping(mapping: np.ndarray, doc_idx: np.ndarray, flags: dict) -> None:
    """A loaded mapping: rows (first sentence, end sentence, target length) of this split."""
    lo, hi = int(doc_idx[0]), int(doc_idx[-1])
    if mapping.ndim != 2 or mapping.shape[1] != 3 or len(mapping) == 0 \
            or mapping[:, 0].min() < lo or mapping[:, 1].max() > hi \
            or np.any(mapping[:, 1] <= mapping[:, 0]):
        raise ValueError(f"{next(iter(flags))}: expected [samples, 3] rows (start sentence, "
                         f"end sentence, target length) within the split's sentences {lo}..{hi}")


def build_train_valid_test_datasets(data_prefix: list[str], splits_string: str,
                                    train_valid_test_num_samples: list[int], max_seq_length: int,
                                    masked_lm_prob: float, short_seq_prob: float, seed: int,
                                    tokenizer, binary_head: bool = True,
                                    cache_dir: str | None = None,
                                    train_mapping: dict[str, str] | None = None):
    """BERT train / valid / test datasets of one prefix or a blend ``[w1, p1, ...]``.

    ``train_mapping`` (``{"--train-idx-path": path}``) is the train split's samples mapping
    to load instead of building (one prefix only).

    Splits are over documents (``doc_idx``), not sentences. A split with no documents is None.
    """
    def single(prefix: str, nums: list[int]):
        indexed = MMapIndexedDataset(prefix)
        bounds = get_train_valid_test_split_(splits_string, indexed.num_documents)
        log_rank_0(f" > BERT dataset {prefix}: {indexed.num_documents} documents, "
                   f"{len(indexed)} sentences; document splits {bounds}")
        out = []
        for i, name in enumerate(("train", "valid", "test")):
            if bounds[i + 1] <= bounds[i]:
                out.append(None)
                continue
            out.append(BertDataset(name, indexed, prefix, indexed.doc_idx[bounds[i]:bounds[i + 1] + 1],
                                   nums[i], masked_lm_prob, max_seq_length, short_seq_prob, seed,
                                   tokenizer, binary_head, cache_dir,
                                   train_mapping if name == "train" else None))
        return tuple(out)

    if len(data_prefix) == 1:
        return single(data_prefix[0], train_valid_test_num_samples)
    if train_mapping:
        raise ValueError("--train-idx-path names the samples mapping of one dataset; "
                         "--data-path blends several")
    prefixes, weights, per_dataset = get_datasets_weights_and_num_samples(
        data_prefix, train_valid_test_num_samples)
    parts = [single(p, n) for p, n in zip(prefixes, per_dataset)]
    return blend_splits(parts, weights, train_valid_test_num_samples, splits_string)
