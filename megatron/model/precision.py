"""What stays fp32 in a bf16/fp16 model, and the module base that keeps it so.

Under ``--bf16`` / ``--fp16`` the model is cast to half precision (``Float16Module``), but
as in Megatron some numbers keep fp32 whatever the model's dtype:

* RoPE's ``inv_freq`` and the rotation angles (``rotary.RotaryEmbedding``): in bf16 the
  angle of position 2047 is off by about 0.37 rad;
* the MoE router's weight and logits (``moe.router.Router``);
* the statistics of every norm of ``norms.NORMS`` (LayerNorm: torch's and apex's kernels
  accumulate in fp32);
* the attention softmax (``attention.core_attention``: SDPA accumulates in fp32) and the
  loss (``tensor_parallel.cross_entropy`` works on fp32 logits);
* the main gradients and the optimizer's master weights (``megatron.optimizer``).

Each rule has a test that fails when it is broken (tests/model/test_fp32_rules.py).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def _keep_fp32(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    def apply(t: torch.Tensor) -> torch.Tensor:
        out = fn(t)
        if t.dtype == torch.float32 and out.dtype != torch.float32 and out.is_floating_point():
            return t.to(out.device)      # move, never round: the fp32 value itself
        return out
    return apply


class Fp32Module(nn.Module):
    """A module whose own fp32 parameters and buffers stay fp32 when the model is cast
    (``.to(dtype)``, ``.bfloat16()``, ``.half()``); device moves still apply."""

    def _apply(self, fn, recurse: bool = True):
        return super()._apply(_keep_fp32(fn), recurse)
