"""Examples -> fixed-length BERT inputs (Megatron's ``[CLS] a [SEP] b [SEP]`` layout)."""
from __future__ import annotations

import numpy as np
import torch

from tasks.glue.data import Example


def tokens_types_paddings(a_ids: list[int], b_ids: list[int] | None, seq_length: int,
                          cls_id: int, sep_id: int, pad_id: int
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[CLS] a [SEP] (b [SEP])`` cut and padded to ``seq_length``, as Megatron builds it.

    Segment ids are 0 for ``[CLS] a [SEP]`` and 1 for ``b [SEP]``; a pair longer than
    ``seq_length`` loses its end (of ``b`` first) and keeps a final ``[SEP]``. Padding has
    token ``pad_id``, segment 0 and padding-mask 0.

    Returns:
        ids, types, padding mask: int64 [seq_length] each (mask 1 = real token).
    """
    ids = [cls_id, *a_ids, sep_id]
    types = [0] * len(ids)
    if b_ids is not None:
        ids += b_ids
        types += [1] * len(b_ids)
    trimmed = len(ids) >= seq_length
    if trimmed:
        ids, types = ids[:seq_length - 1], types[:seq_length - 1]
    if b_ids is not None or trimmed:
        ids.append(sep_id)
        types.append(0 if b_ids is None else 1)
    real = len(ids)
    out = np.full((3, seq_length), 0, dtype=np.int64)
    out[0, :] = pad_id
    out[0, :real], out[1, :real], out[2, :real] = ids, types, 1
    return out[0], out[1], out[2]


class ClassificationDataset(torch.utils.data.Dataset):
    """Labelled text pairs of one or more files, tokenized on access.

    Args:
        name: what the metric lines call it (e.g. ``dev-matched``).
        examples: the files' examples.
        tokenizer: the run's tokenizer (``tokenize``, ``cls``, ``sep``, ``pad``).
        seq_length: ``--seq-length``.

    Items: ``text``, ``types``, ``padding_mask`` int64 [s]; ``label`` int64 (float32 for
    a regression).
    """

    def __init__(self, name: str, examples: list[Example], tokenizer, seq_length: int) -> None:
        self.name, self.examples = name, examples
        self.tokenizer, self.seq_length = tokenizer, seq_length

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, idx: int) -> dict:
        ex, tok = self.examples[idx], self.tokenizer
        ids, types, mask = tokens_types_paddings(
            tok.tokenize(ex.text_a), None if ex.text_b is None else tok.tokenize(ex.text_b),
            self.seq_length, tok.cls, tok.sep, tok.pad)
        label = np.float32(ex.label) if isinstance(ex.label, float) else np.int64(ex.label)
        return {"text": ids, "types": types, "padding_mask": mask, "label": label}
