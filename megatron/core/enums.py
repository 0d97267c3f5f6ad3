"""Model types, as Megatron's ``megatron.core.enums.ModelType``.

``pretrain()`` takes one explicitly. Megatron passes ``encoder_or_decoder`` for both GPT
and BERT; here BERT passes ``encoder`` (this project's addition), because the loop must
know that every pipeline stage reads the batch (the padding mask) and that the BERT
curriculum transforms (seqreo) apply.
"""
from __future__ import annotations

import enum


class ModelType(enum.Enum):
    encoder_or_decoder = 1      # GPT: a causal decoder stack (Megatron's value)
    encoder_and_decoder = 2     # T5-style (Megatron's value; not supported here)
    encoder = 101               # BERT: a bidirectional encoder (this project)

    @property
    def data_model(self) -> str:
        """``"gpt"`` or ``"bert"``: which batch layout and curriculum transforms apply."""
        if self is ModelType.encoder_or_decoder:
            return "gpt"
        if self is ModelType.encoder:
            return "bert"
        raise ValueError(f"{self}: encoder-decoder models are not supported")
