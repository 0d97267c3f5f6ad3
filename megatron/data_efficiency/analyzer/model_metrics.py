"""Model-based analyzer metrics: each sample's mean token loss (or perplexity) under a
reference checkpoint of this codebase.

The checkpoint may have been saved with any TP/PP layout: the caller
(``tools/analyze_data.py``) loads it as one whole model per analyzer rank with
``megatron.checkpointing.whole_model.load_model`` (eval mode: no dropout, no token
dropping) and hands it to :func:`reference_model`; this module never reads checkpoints
or builds models itself. A metric is an ordinary analyzer user metric
(``fn(tokens, offsets) -> values``), so it runs batched over the analyzer's shards, across
MPI ranks, resumes from finished shards and is written as a float64 index with the data's
fingerprint. Its shard cache is keyed by the model's fingerprint (a hash of every weight),
so a resume with another checkpoint recomputes.

Values:
* ``loss``: mean over the sample's predicted tokens of ``-ln p(token | prefix)``, the
  training loss of that one sample (GPT samples of ``seq_length + 1`` tokens: inputs
  ``t[:-1]``, labels ``t[1:]``, causal mask, positions ``0..s-1``), computed in float32;
  for a document (``document_window``), the mean over all its predicted tokens when it
  is read as windows of ``document_window + 1`` tokens (``document_scoring.py``);
* ``ppl``: ``exp(loss)``.

Batches of ``batch_size`` samples (document windows) are cut from each analyzer batch,
whose bounds do not depend on the number of ranks, so every rank count writes the same
bytes.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from megatron.data_efficiency.analyzer import document_scoring
from megatron.errors import CheckpointError

MODEL_METRICS = ("loss", "ppl")
_UNSUPPORTED_FLAGS = ("reset_position_ids", "reset_attention_mask", "eod_mask_loss")


def state_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """16 hex characters of a sha256 over every tensor (name, dtype, shape, bytes)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


@dataclass
class ReferenceModel:
    """A whole GPT model from a checkpoint, ready for evaluation."""
    model: torch.nn.Module
    seq_length: int
    iteration: int
    fingerprint: str
    load_dir: str
    tokenizer: dict | None = None   # the identity its run record names (None: older checkpoint)


def reference_model(loaded) -> ReferenceModel:
    """The analyzer's reference from a checkpoint loaded as one whole model
    (``megatron.checkpointing.whole_model.LoadedModel``).

    Raises:
        CheckpointError: not a GPT, or trained on samples the loss metric cannot score
            alike (positions or attention reset at document ends, end-of-document loss
            masked).
    """
    config = loaded.config
    if (config.model_type or "gpt") != "gpt":
        raise CheckpointError(f"{loaded.load_dir} holds a {config.model_type} model; "
                              "the model metrics score with a GPT")
    bad = [k for k in _UNSUPPORTED_FLAGS if getattr(config.data, k)]
    if bad:
        raise CheckpointError(f"{loaded.load_dir}: trained with {bad}; the loss metric scores "
                              "plain causal samples only")
    return ReferenceModel(loaded.model, config.training.seq_length, loaded.iteration,
                          state_fingerprint(loaded.state_dict), loaded.load_dir,
                          loaded.run_record.get("tokenizer"))


def check_window(ref: ReferenceModel, window: int | None) -> int | None:
    """A document window's ``seq_length``: positive and within the reference's."""
    if window is not None and not 1 <= window <= ref.seq_length:
        raise ValueError(f"document windows of {window} + 1 tokens: the reference model at "
                         f"{ref.load_dir} reads at most {ref.seq_length} positions")
    return window


def window_meta(window: int | None) -> dict:
    """meta.json's record of how documents were read (nothing for GPT samples)."""
    if window is None:
        return {}
    return {"document_window_tokens": window + 1,
            "document_scoring": "windows of document_window_tokens sharing their boundary "
                                "token; every token after a document's first predicted "
                                "once; documents under two tokens: nothing predicted"}


class TokenLossMetric:
    """Analyzer user metric: mean token loss (``loss``) or its exp (``ppl``) per sample.

    Args:
        ref: the reference model.
        kind: ``"loss"`` or ``"ppl"``.
        batch_size: samples (document windows) per forward pass.
        document_window: score documents of any length, read as windows of this
            ``seq_length`` (at most the reference's); None: GPT samples of one length.
    """

    def __init__(self, ref: ReferenceModel, kind: str = "loss", batch_size: int = 8,
                 document_window: int | None = None):
        if kind not in MODEL_METRICS:
            raise ValueError(f"model metric must be one of {MODEL_METRICS}, got {kind!r}")
        self.ref, self.name, self.batch_size = ref, kind, int(batch_size)
        self.window = check_window(ref, document_window)
        self.progress = None   # a RowProgress the analyzer sets: advanced per forward batch
        self.device = next(ref.model.parameters()).device
        self.cache_tag = f"{kind}-{ref.fingerprint}-b{self.batch_size}" + (
            "" if self.window is None else f"-w{self.window}")
        self.meta = {"reference_load": ref.load_dir, "reference_iteration": ref.iteration,
                     "reference_fingerprint": ref.fingerprint, "model_metric": kind,
                     "reference_batch_size": self.batch_size,
                     **window_meta(self.window)}

    @torch.no_grad()
    def sample_losses(self, samples: np.ndarray) -> np.ndarray:
        """Mean token loss of each row.              # [n, s + 1] int -> [n] float64"""
        out = []
        for a in range(0, len(samples), self.batch_size):
            t = torch.as_tensor(np.asarray(samples[a:a + self.batch_size], dtype=np.int64),
                                device=self.device)
            pos = torch.arange(t.shape[1] - 1, device=self.device).expand(t.shape[0], -1)
            loss = self.ref.model(t[:, :-1], pos, None, labels=t[:, 1:])   # [b, s] fp32
            out.append(loss.float().mean(dim=1).double().cpu().numpy())
            if self.progress is not None:
                self.progress.advance(len(t))
        return np.concatenate(out) if out else np.zeros(0)

    def __call__(self, tokens: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        if self.window is not None:
            loss = document_scoring.document_losses(self.ref.model, tokens, offsets,
                                                    self.window, self.batch_size, self.progress)
            return np.exp(loss) if self.name == "ppl" else loss
        lengths = np.diff(offsets)
        if len(lengths) and (lengths != lengths[0]).any():
            raise ValueError("model metrics need samples of one length (--granularity sample)")
        if len(lengths) and lengths[0] - 1 > self.ref.seq_length:
            raise ValueError(f"samples of {lengths[0]} tokens exceed the reference model's "
                             f"sequence length {self.ref.seq_length} + 1")
        n = len(lengths)
        rows = np.asarray(tokens).reshape(n, -1) if n else np.zeros((0, 2), np.int64)
        loss = self.sample_losses(rows)
        return np.exp(loss) if self.name == "ppl" else loss
