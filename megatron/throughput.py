"""Model FLOPs of a training step, TFLOP/s per device and MFU.

The count is Megatron-LM's ``num_floating_point_operations`` for a transformer: every
GEMM costs ``2 m n k`` and runs three times in a training step (forward, input gradient,
weight gradient), elementwise work and norms are not counted, and the input embedding is
a lookup. Per layer and token, forward:

* attention projections ``2 h (q + 2 kv) + 2 q h`` with ``q = heads * kv_channels`` and
  ``kv = query_groups * kv_channels`` (grouped-query attention shrinks K and V);
* core attention ``2 q L`` per token of a length-``L`` sequence for a causal model (QK^T
  and attention-times-V, half of the score matrix each, as Megatron counts it) and
  ``4 q L`` for BERT's bidirectional attention;
* MLP ``2 h f * 2``, or ``2 h f * 3`` with SwiGLU (gate, up, down); an MoE layer runs
  ``topk`` experts of width ``f`` per token (the router, and tokens dropped over
  capacity, are not counted, as in Megatron);
* the output layer ``2 h V`` per token (tied or untied: the GEMM is the same), and for
  BERT the LM head's ``h x h`` transform (the pooler and binary head, per sequence, are
  left out).

Data efficiency changes the shapes, and the count follows the step's ``StepPlan``
exactly: curriculum truncation (``seqtru``/``seqres``) gives ``rows`` sequences of
``seq_length``; a random-LTD layer runs only its ``kept_length`` tokens per sequence (its
attention is over those), while the other layers and the output layer see the full
length. BERT's ``seqreo`` is the exception: its plan holds the longest micro-batch's
length, so its FLOPs are an upper bound.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# Dense (no sparsity) bf16/fp16 tensor-core peak per device, TFLOP/s, from NVIDIA's data
# sheets; the first name found in torch.cuda.get_device_name() wins, so longer names come
# first ("NVIDIA H100 80GB HBM3" is the SXM part; an H100 not named otherwise is taken as
# SXM, the higher peak, which under- rather than over-states MFU).
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989.0), ("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0),
    ("H100", 989.0), ("H800", 989.0), ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0),
    ("A10", 125.0), ("L40S", 362.0), ("L4", 121.0), ("V100", 125.0),
)


def peak_tflops(device_name: str | None, override: float | None = None) -> float | None:
    """The per-device peak MFU is measured against: ``--peak-tflops`` when given, else the
    table's entry for ``device_name`` (None: no GPU, or one not in the table)."""
    if override is not None:
        return override
    if not device_name:
        return None
    return next((tflops for name, tflops in PEAK_TFLOPS if name in device_name), None)


def device_name() -> str | None:
    """This process's GPU name, None on CPU."""
    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


@dataclass(frozen=True)
class ModelFlops:
    """The shape numbers the FLOPs count needs (``from_config``).

    Attributes:
        causal: GPT (True) or BERT (False: full attention, LM-head transform).
        moe_layers: 0-based ids of the layers whose MLP is a mixture of experts.
    """
    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_attention_heads: int
    kv_channels: int
    num_query_groups: int
    vocab_size: int
    swiglu: bool = False
    causal: bool = True
    moe_layers: frozenset[int] = frozenset()
    moe_topk: int = 1

    @classmethod
    def from_config(cls, config, causal: bool = True) -> "ModelFlops":
        """From a ``megatron.model.config.TransformerConfig`` (its derived defaults
        filled)."""
        moe = config.moe
        return cls(num_layers=config.num_layers, hidden_size=config.hidden_size,
                   ffn_hidden_size=config.ffn_hidden_size,
                   num_attention_heads=config.num_attention_heads,
                   kv_channels=config.kv_channels, num_query_groups=config.num_query_groups,
                   vocab_size=config.padded_vocab_size, swiglu=config.swiglu, causal=causal,
                   moe_layers=frozenset(moe.moe_layer_ids) if moe is not None else frozenset(),
                   moe_topk=moe.topk if moe is not None else 1)

    def _per_token(self, layer: int) -> int:
        """Forward FLOPs per token of layer ``layer`` that do not depend on the length."""
        h = self.hidden_size
        q = self.num_attention_heads * self.kv_channels
        kv = self.num_query_groups * self.kv_channels
        attention = 2 * h * (q + 2 * kv) + 2 * q * h
        experts = self.moe_topk if layer in self.moe_layers else 1
        mlp = 2 * h * self.ffn_hidden_size * (3 if self.swiglu else 2) * experts
        return attention + mlp

    def _per_token_squared(self) -> int:
        """Forward core-attention FLOPs per (token x sequence length)."""
        q = self.num_attention_heads * self.kv_channels
        return 2 * q if self.causal else 4 * q

    def step_flops(self, rows: int, seq_length: int, kept_length: int | None = None,
                   dropping_layers: frozenset[int] = frozenset()) -> int:
        """FLOPs of one training step (forward and backward) over the global batch.

        Args:
            rows: sequences in the global batch.
            seq_length: tokens per sequence.
            kept_length: tokens a random-LTD layer keeps (None: no dropping).
            dropping_layers: 0-based ids of the layers that drop tokens.
        """
        forward = 0
        for layer in range(self.num_layers):
            length = seq_length
            if layer in dropping_layers and kept_length is not None:
                length = min(kept_length, seq_length)
            forward += rows * length * (self._per_token(layer)
                                        + length * self._per_token_squared())
        head = 2 * self.hidden_size * self.vocab_size
        if not self.causal:
            head += 2 * self.hidden_size * self.hidden_size   # BERT's LM-head transform
        forward += rows * seq_length * head
        return 3 * forward

    def plan_flops(self, plan) -> int:
        """``step_flops`` of a ``StepPlan``'s shapes."""
        return self.step_flops(plan.rows, plan.seq_length, plan.kept_length,
                               frozenset(plan.dropping_layers))


def tflops_per_device(flops: float, seconds: float, world_size: int) -> float:
    """Achieved TFLOP/s per device: ``flops`` done by ``world_size`` devices in
    ``seconds``."""
    if seconds <= 0 or world_size < 1:
        return 0.0
    return flops / seconds / world_size / 1e12


def mfu(tflops: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation, a fraction of ``peak`` (None: no peak known)."""
    return None if not peak else tflops / peak
