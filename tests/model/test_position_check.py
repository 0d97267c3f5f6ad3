"""Positions past --max-position-embeddings: one clear error before the lookup on every
device, with no host sync. A meta tensor stands in for an accelerator: its values cannot be
read at all, so a check that copies them to the host fails on it."""
import pytest
import torch

from megatron.model.language_model import Embedding
from tests.moe.helpers import model_config


def _embedding(device: str) -> Embedding:
    torch.manual_seed(0)
    return Embedding(model_config(seq=8, hidden=16)).to(device)


def test_a_sequence_longer_than_the_table_fails_from_its_shape():
    emb = _embedding("meta")
    ids = torch.zeros(2, 9, dtype=torch.long, device="meta")
    with pytest.raises(ValueError, match="9 tokens .* --max-position-embeddings 8"):
        emb(ids, torch.arange(9, device="meta").expand(2, 9))


def test_positions_within_the_table_are_not_read_on_an_accelerator():
    emb = _embedding("meta")
    ids = torch.zeros(2, 8, dtype=torch.long, device="meta")
    out = emb(ids, torch.arange(8, device="meta").expand(2, 8))   # no .item() on meta
    assert out.shape == (8, 2, 16)


def test_cpu_positions_are_also_checked_by_value():
    emb = _embedding("cpu")
    with pytest.raises(ValueError, match="position id 12 is out of range"):
        emb(torch.zeros(1, 2, dtype=torch.long), torch.tensor([[0, 12]]))
