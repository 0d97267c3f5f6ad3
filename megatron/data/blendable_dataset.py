"""Weighted interleaving of several datasets (Megatron's ``BlendableDataset``)."""

from __future__ import annotations

import time
from typing import Sequence

import torch

from .dataset_utils import build_blending_indices


class BlendableDataset(torch.utils.data.Dataset):
    """``size`` samples drawn from ``datasets`` in proportion to ``weights``.

    Sample ``idx`` is sample ``dataset_sample_index[idx]`` of dataset ``dataset_index[idx]``;
    the returned dict carries ``sample_id = idx`` (the blend's id, which the analyzer and the
    curriculum sampler use), and ``dataset_id`` telling which dataset it came from.
    ``weights`` are the weights it was built with (normalised by ``--data-path``'s parser;
    an analyzer index of the blend records them).
    """

    def __init__(self, datasets: Sequence[torch.utils.data.Dataset], weights: Sequence[float],
                 size: int) -> None:
        if len(datasets) != len(weights):
            raise ValueError(f"BlendableDataset: {len(datasets)} datasets but {len(weights)} weights")
        self.datasets = list(datasets)
        self.weights = [float(w) for w in weights]
        self.size = int(size)
        start = time.time()
        self.dataset_index, self.dataset_sample_index = build_blending_indices(weights, self.size)
        for d, dataset in enumerate(self.datasets):
            picked = self.dataset_sample_index[self.dataset_index == d]
            if len(picked) and picked[-1] >= len(dataset):
                raise ValueError(f"BlendableDataset: dataset {d} has {len(dataset)} samples but the "
                                 f"blend of {self.size} needs {int(picked[-1]) + 1}")
        self.build_seconds = time.time() - start

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, idx: int) -> dict:
        if not 0 <= idx < self.size:
            raise IndexError(f"sample {idx} out of range for a blend of {self.size} samples")
        d = int(self.dataset_index[idx])
        sample = dict(self.datasets[d][int(self.dataset_sample_index[idx])])
        sample["sample_id"] = idx
        sample["dataset_id"] = d
        return sample


def blend_splits(parts: Sequence[tuple], weights: Sequence[float], sizes: Sequence[int],
                 splits_string: str) -> tuple:
    """Blend per-dataset ``(train, valid, test)`` tuples split by split.

    ``sizes`` are the blend's sample counts per split. A split empty in every dataset is None;
    one empty in only some is an error (the blend's weights could not hold).
    """
    blends = []
    for split, name in enumerate(("train", "valid", "test")):
        datasets = [part[split] for part in parts]
        if all(d is None for d in datasets):
            blends.append(None)
        elif any(d is None for d in datasets):
            raise ValueError(f"--split {splits_string!r} leaves the {name} split empty for some "
                             "but not all blended datasets")
        else:
            blends.append(BlendableDataset(datasets, weights, sizes[split]))
    return tuple(blends)
