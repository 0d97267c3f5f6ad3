"""Per-step MoE figures across ranks: load-balancing loss, expert load, dropped tokens.

The training loop calls ``begin_step`` (sets the auxiliary loss's gradient scale, clears
the layers' counters) and ``end_step`` (one all-reduce over the pipeline group and one
over the data-parallel group: every rank of a run calls it, MoE or not it is a no-op for
dense models). The figures are those of the step just done.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from megatron.core import parallel_state
from megatron.core.devices import collective_device
from megatron.model.moe.aux_loss import set_aux_loss_grad_scale
from megatron.model.moe.config import MoEConfig


class MoEMonitor:
    """Collects what this rank's MoE layers routed and reduces it for the logger.

    Args:
        model_chunks: this rank's model chunks.
        moe: the run's MoE config (None: dense, every method is a no-op).
    """

    def __init__(self, model_chunks: list[nn.Module], moe: MoEConfig | None) -> None:
        from megatron.model.moe.layer import MoELayer
        self.moe = moe
        self.layer_ids = sorted(moe.moe_layer_ids) if moe is not None else []
        self.layers = {m.layer_id: m for chunk in model_chunks for m in chunk.modules()
                       if isinstance(m, MoELayer)}
        self.last: torch.Tensor | None = None    # [layers, 3 + E] of the last step

    def begin_step(self, loss_scale: float, num_microbatches: int) -> None:
        """Before the schedule: the factor each micro-batch's LM loss gets before backward."""
        set_aux_loss_grad_scale(loss_scale / num_microbatches)
        for layer in self.layers.values():
            layer.stats.reset()

    def end_step(self) -> None:
        """After the schedule (collective over PP and DP when MoE is on)."""
        if self.moe is None:
            return
        rows = torch.zeros(len(self.layer_ids), 3 + self.moe.num_experts, dtype=torch.float64)
        for i, layer_id in enumerate(self.layer_ids):
            if layer_id in self.layers:
                rows[i] = self.layers[layer_id].stats.as_vector()
        if dist.is_initialized():
            groups = (parallel_state.get_pipeline_model_parallel_group(),
                      parallel_state.get_data_parallel_group())
            flat = rows.to(collective_device(groups[0]))
            for group in groups:
                dist.all_reduce(flat, group=group)
            rows = flat.cpu()
        self.last = rows

    def scalars(self) -> dict[str, float]:
        """``moe/load_balancing_loss`` (mean over layers, without the coefficient; 1.0 is
        balanced) and ``moe/dropped_token_fraction`` (assignments dropped by capacity)."""
        if self.last is None or not len(self.layer_ids):
            return {}
        forwards = self.last[:, 1].clamp(min=1)
        assigned = self.last[:, 3:].sum().clamp(min=1)
        return {"moe/load_balancing_loss": float((self.last[:, 0] / forwards).mean()),
                "moe/dropped_token_fraction": float(self.last[:, 2].sum() / assigned)}

    def histograms(self) -> dict[str, torch.Tensor]:
        """``moe/expert_load/layer_{id}``: per expert, the tokens routed to it (each
        expert id repeated by its load, so TensorBoard's histogram shows the load)."""
        if self.last is None:
            return {}
        out = {}
        for i, layer_id in enumerate(self.layer_ids):
            counts = self.last[i, 3:].round().long()
            out[f"moe/expert_load/layer_{layer_id}"] = torch.repeat_interleave(
                torch.arange(len(counts), dtype=torch.float32), counts)
        return out
