"""Data loaders for pretraining: a sampler of sample ids plus a collate into LongTensors."""

from __future__ import annotations

import numpy as np
import torch

from megatron.signal_handler import worker_init_fn

from .samplers import MegatronPretrainingRandomSampler, MegatronPretrainingSampler

# Keys whose values are token ids or ids and must arrive as int64.
_LONG_KEYS = ("text", "sample_id", "types", "labels", "is_random", "dataset_id")


def collate_samples(samples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack a list of sample dicts: ``text`` -> LongTensor [b, s+1], ``sample_id`` -> [b].

    Every other key is stacked the same way (arrays -> [b, ...], scalars -> [b]).
    """
    if not samples:
        raise ValueError("collate_samples: empty batch")
    batch = {}
    for key in samples[0]:
        arr = np.stack([np.asarray(s[key]) for s in samples])
        tensor = torch.from_numpy(np.ascontiguousarray(arr))
        batch[key] = tensor.long() if key in _LONG_KEYS else tensor
    return batch


def build_pretraining_data_loader(dataset, consumed_samples: int, micro_batch_size: int,
                                  data_parallel_rank: int, data_parallel_size: int,
                                  num_workers: int = 0, batch_sampler=None,
                                  dataloader_type: str = "single",
                                  pin_memory: bool | None = None, shield_workers: bool = False):
    """A ``torch.utils.data.DataLoader`` over ``dataset`` for one data-parallel rank.

    Args:
        dataset: map-style dataset returning sample dicts (or None -> returns None).
        consumed_samples: samples already trained on by all ranks together (resume point).
        micro_batch_size: samples per micro-batch on this rank.
        data_parallel_rank / data_parallel_size: this rank's place in the data-parallel group.
        num_workers: loader worker processes.
        batch_sampler: a custom sampler of id lists (e.g. the curriculum sampler); when given,
            it replaces Megatron's sampler.
        dataloader_type: ``"single"`` (sequential) or ``"cyclic"`` (reshuffled every epoch).
        pin_memory: the loader's ``pin_memory`` (None: pinned when CUDA is present).
        shield_workers: the run has ``--exit-signal-handler``: workers ignore SIGTERM /
            SIGINT so the step in flight can finish (``signal_handler.worker_init_fn``).
    """
    if dataset is None:
        return None
    if batch_sampler is None:
        if dataloader_type == "single":
            batch_sampler = MegatronPretrainingSampler(
                len(dataset), consumed_samples, micro_batch_size, data_parallel_rank,
                data_parallel_size)
        elif dataloader_type == "cyclic":
            batch_sampler = MegatronPretrainingRandomSampler(
                len(dataset), consumed_samples, micro_batch_size, data_parallel_rank,
                data_parallel_size)
        else:
            raise ValueError(f"--dataloader-type {dataloader_type!r}: use 'single' or 'cyclic'")
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=batch_sampler, num_workers=num_workers,
        collate_fn=collate_samples,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        persistent_workers=num_workers > 0,
        worker_init_fn=worker_init_fn(shield_workers and num_workers > 0))
