"""A small random token store (Megatron's .bin/.idx) for tests that train on real files."""
from __future__ import annotations

import numpy as np

from megatron.data.indexed_dataset import MMapIndexedDatasetBuilder


def write_random_store(prefix: str, vocab: int, documents: int, lengths: tuple[int, int],
                       seed: int = 0) -> None:
    """``documents`` documents of uniform ids below ``vocab - 1``, each ``lengths[0] <= n <
    lengths[1]`` tokens long and ended by the end-of-document id ``vocab - 1``."""
    rng = np.random.default_rng(seed)
    builder = MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for _ in range(documents):
        builder.add_item(np.append(rng.integers(0, vocab - 1, int(rng.integers(*lengths))),
                                   vocab - 1))
        builder.end_document()
    builder.finalize(prefix + ".idx")
