"""seqtru / seqres / seqreo shapes, contents and token counts."""
import pytest
import torch

from megatron.data_efficiency.curriculum.transforms import (BatchShape, seqreo, seqres, seqtru,
                                                            shape_for_difficulty)
from megatron.data_efficiency.token_accounting import tokens_per_step


def gpt_batch(b=3, s=10):
    text = torch.arange(b * (s + 1)).reshape(b, s + 1)
    return {"text": text, "sample_id": torch.arange(b) + 100}


def pairs(text):
    """Set of (input, label) next-token pairs of a GPT text batch."""
    return {(int(x), int(y)) for row in text for x, y in zip(row[:-1], row[1:])}


def test_seqtru_gpt_keeps_d_plus_one_tokens():
    batch = gpt_batch()
    out, shape = seqtru(batch, 4)
    assert out["text"].shape == (3, 5) and shape == BatchShape(3, 4)
    assert torch.equal(out["text"], batch["text"][:, :5])
    assert torch.equal(out["sample_id"], batch["sample_id"])
    assert seqtru(batch, 10)[1] == BatchShape(3, 10)             # d >= s: unchanged
    assert shape_for_difficulty("seqtru", 4, 3, 10) == shape
    assert tokens_per_step(shape.rows, shape.seq_length) == 12


def test_seqtru_bert_cuts_every_sequence_tensor():
    b, s = 2, 16
    batch = {k: torch.ones(b, s, dtype=torch.long) for k in
             ("text", "types", "labels", "loss_mask", "padding_mask")}
    batch["is_random"] = torch.zeros(b)
    out, shape = seqtru(batch, 8, model="bert")
    assert shape == BatchShape(2, 8)
    assert all(out[k].shape == (2, 8) for k in ("text", "types", "labels", "loss_mask"))
    assert out["is_random"].shape == (2,)
    # as Megatron-DeepSpeed's pretrain_bert.py: BERT's seqtru length is rounded up to 8
    out, shape = seqtru(batch, 9, model="bert")
    assert shape == BatchShape(2, 16) and out["text"].shape == (2, 16)
    out, shape = seqtru({k: torch.ones(2, 32) for k in batch}, 9, model="bert")
    assert shape == BatchShape(2, 16) and out["padding_mask"].shape == (2, 16)
    assert shape_for_difficulty("seqtru", 9, 2, 32, model="bert") == shape
    assert shape_for_difficulty("seqtru", 9, 2, 32) == BatchShape(2, 9)     # GPT: not rounded


@pytest.mark.parametrize("d", [1, 3, 4, 5, 9])
def test_seqres_reshapes_into_rows_keeping_next_token_pairs(d):
    b, s = 3, 10
    batch = gpt_batch(b, s)
    batch["loss_mask"] = torch.ones(b, s)
    out, shape = seqres(batch, d)
    k = s // d
    assert out["text"].shape == (b * k, d + 1) and shape == BatchShape(b * k, d)
    assert out["loss_mask"].shape == (b * k, d)
    assert out["sample_id"].tolist() == [100 + i for i in range(b) for _ in range(k)]
    kept = pairs(out["text"])
    assert kept <= pairs(batch["text"]) and len(kept) == b * k * d   # only the remainder dropped
    assert shape_for_difficulty("seqres", d, b, s) == shape
    assert tokens_per_step(shape.rows, shape.seq_length) == b * k * d


def test_seqreo_truncates_to_longest_real_sample_rounded_to_8():
    mask = torch.zeros(2, 32, dtype=torch.long)
    mask[0, :5] = 1
    mask[1, :11] = 1
    batch = {"text": torch.arange(64).reshape(2, 32), "padding_mask": mask,
             "is_random": torch.zeros(2)}
    out, shape = seqreo(batch)
    assert shape == BatchShape(2, 16) and out["text"].shape == (2, 16)
    assert torch.equal(out["text"], batch["text"][:, :16])


def test_bad_difficulty_and_unknown_transform():
    with pytest.raises(ValueError):
        seqtru(gpt_batch(), 0)
    with pytest.raises(ValueError, match="seqreo"):
        shape_for_difficulty("seqreo", 8, 4, 16)
