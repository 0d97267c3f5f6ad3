"""Whole documents under a reference model: each document is read as windows of
``seq_length + 1`` tokens, as GPT training samples are cut.

A document of ``L`` tokens has windows starting at ``0, S, 2S, ...`` (``S`` the window's
``seq_length``) while a start is below ``L - 1``; a window holds ``min(S + 1, L - start)``
tokens, so consecutive windows share their boundary token (the last label of one is the
first input of the next) and every token after the first is predicted exactly once, with
the context of its own window (positions ``0..``; no state is carried between windows).
The last window holds what is left (2 to ``S + 1`` tokens) and is scored as a shorter
sample. A document shorter than two tokens has no window: nothing is predicted, and its
sums are empty (loss 0, embedding the zero vector).

Windows of many documents are batched together, longest first, ``batch_size`` to a
forward pass, each batch padded to its longest window (padding is after the real tokens,
so a causal model's real positions never see it, and it is masked out of every sum).
The batches depend only on the documents passed in, so the bytes written do not depend on
the number of analyzer ranks. A ``progress`` (``row_progress.RowProgress``) counts
documents: each batch advances it by the documents whose last window it scored.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Windows:
    """The windows of a batch of documents, in document order.

    Attributes:
        doc: int64 [w] the document (0..n-1) each window belongs to.
        start: int64 [w] the window's first token in the flat token array.
        length: int64 [w] tokens in the window (2..seq_length + 1).
    """
    doc: np.ndarray
    start: np.ndarray
    length: np.ndarray


def cut_windows(offsets: np.ndarray, seq_length: int) -> Windows:
    """The windows of documents ``tokens[offsets[k]:offsets[k+1]]`` (see module doc)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.diff(offsets)
    count = np.where(lengths >= 2, -(-(lengths - 1) // seq_length), 0)    # ceil((L-1)/S)
    doc = np.repeat(np.arange(len(lengths), dtype=np.int64), count)
    first = np.cumsum(count) - count                                     # first window of doc
    k = np.arange(int(count.sum()), dtype=np.int64) - first[doc]         # window number in doc
    start = k * seq_length
    length = np.minimum(seq_length + 1, lengths[doc] - start)
    return Windows(doc, offsets[doc] + start, length)


class _DocumentsDone:
    """Documents finished as window batches are scored, for a progress count."""

    def __init__(self, windows: Windows, num_docs: int, progress) -> None:
        self.doc, self.progress = windows.doc, progress
        self.left = np.bincount(windows.doc, minlength=num_docs)
        self.done = int((self.left == 0).sum())          # no window: nothing to score

    def scored(self, idx: np.ndarray) -> None:
        if self.progress is None:
            return
        np.subtract.at(self.left, self.doc[idx], 1)
        docs = np.unique(self.doc[idx])
        self.progress.advance(int((self.left[docs] == 0).sum()) + self.done)
        self.done = 0

    def close(self) -> None:
        if self.progress is not None and self.done:
            self.progress.advance(self.done)


def window_batches(windows: Windows, batch_size: int) -> list[np.ndarray]:
    """Window indices per forward pass: longest first (stable), ``batch_size`` each."""
    order = np.argsort(-windows.length, kind="stable")
    return [order[a:a + batch_size] for a in range(0, len(order), batch_size)]


def _padded(tokens: np.ndarray, windows: Windows, idx: np.ndarray) -> torch.Tensor:
    """int64 [b, longest] rows of the windows ``idx``, zero-padded on the right."""
    width = int(windows.length[idx].max())
    rows = np.zeros((len(idx), width), dtype=np.int64)
    for r, w in enumerate(idx):
        a, n = int(windows.start[w]), int(windows.length[w])
        rows[r, :n] = tokens[a:a + n]
    return torch.from_numpy(rows)


def _input_mask(lengths: np.ndarray, width: int, device) -> torch.Tensor:
    """[b, width - 1] float64: 1 on the inputs whose next token is in the window."""
    n = torch.as_tensor(lengths - 1, device=device)
    return (torch.arange(width - 1, device=device)[None] < n[:, None]).double()


def final_hidden_states(model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The reference GPT's final hidden states (after the final norm) of ``inputs``
    read from position 0, causal.                     # [b, s] int64 -> [s, b, h]"""
    pos = torch.arange(inputs.shape[1], device=inputs.device).expand(inputs.shape[0], -1)
    rope = model.rotary_pos_emb(pos) if model.rotary_pos_emb is not None else None
    return model.transformer(model.embedding(inputs, pos), None, rope, None)


@torch.no_grad()
def document_losses(model: torch.nn.Module, tokens: np.ndarray, offsets: np.ndarray,
                    seq_length: int, batch_size: int, progress=None) -> np.ndarray:
    """Mean token loss of each document: the sum of ``-ln p(token | its window's
    prefix)`` over its ``L - 1`` predicted tokens, divided by ``L - 1`` (0 when ``L < 2``).
    Token losses in float32 as training computes them, summed in float64.
                                            # tokens [T], offsets [n+1] -> [n] float64"""
    device = next(model.parameters()).device
    windows = cut_windows(offsets, seq_length)
    sums = np.zeros(len(offsets) - 1)
    done = _DocumentsDone(windows, len(sums), progress)
    for idx in window_batches(windows, batch_size):
        t = _padded(tokens, windows, idx).to(device)
        pos = torch.arange(t.shape[1] - 1, device=device).expand(t.shape[0], -1)
        loss = model(t[:, :-1], pos, None, labels=t[:, 1:])               # [b, s] fp32
        mask = _input_mask(windows.length[idx], t.shape[1], device)
        np.add.at(sums, windows.doc[idx], (loss.double() * mask).sum(1).cpu().numpy())
        done.scored(idx)
    done.close()
    predicted = np.maximum(np.diff(np.asarray(offsets, dtype=np.int64)) - 1, 0)
    return np.divide(sums, predicted, out=np.zeros_like(sums), where=predicted > 0)


@torch.no_grad()
def document_embeddings(model: torch.nn.Module, tokens: np.ndarray, offsets: np.ndarray,
                        seq_length: int, batch_size: int, progress=None) -> np.ndarray:
    """Unit-norm mean of the final hidden states over every input position of each
    document's windows (the positions its loss is predicted from); the zero vector for a
    document shorter than two tokens.         # tokens [T], offsets [n+1] -> [n, h] float64"""
    device = next(model.parameters()).device
    windows = cut_windows(offsets, seq_length)
    sums = np.zeros((len(offsets) - 1, model.config.hidden_size))
    done = _DocumentsDone(windows, len(sums), progress)
    for idx in window_batches(windows, batch_size):
        t = _padded(tokens, windows, idx).to(device)
        hidden = final_hidden_states(model, t[:, :-1]).double()          # [s, b, h]
        mask = _input_mask(windows.length[idx], t.shape[1], device)      # [b, s]
        np.add.at(sums, windows.doc[idx], torch.einsum("sbh,bs->bh", hidden, mask).cpu().numpy())
        done.scored(idx)
    done.close()
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return np.divide(sums, norms, out=np.zeros_like(sums), where=norms > 0)
