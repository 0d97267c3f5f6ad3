"""Batch helpers shared by the pretraining scripts."""
from __future__ import annotations

import torch
import torch.distributed as dist

from megatron.core import parallel_state


def get_ltor_masks_and_position_ids(data: torch.Tensor, eod_token: int,
                                    reset_position_ids: bool, reset_attention_mask: bool,
                                    eod_mask_loss: bool
                                    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Left-to-right masks and positions for packed documents (Megatron's semantics).

    A document ends at (and includes) each ``eod_token``; the next token starts a new one.

    Args:
        data: [b, s] token ids.
        eod_token: end-of-document id.
        reset_position_ids: positions restart at 0 after every EOD.
        reset_attention_mask: tokens attend only within their own document.
        eod_mask_loss: zero the loss weight where the *input* token is EOD.

    Returns:
        attention_mask: None (plain causal) unless ``reset_attention_mask``; then bool
            [b, 1, s, s] with True = masked (causal and within-document).
        loss_mask: [b, s] float.
        position_ids: [b, s] long.
    """
    b, s = data.shape
    device = data.device
    is_eod = data == eod_token
    loss_mask = torch.ones(b, s, dtype=torch.float, device=device)
    if eod_mask_loss:
        loss_mask[is_eod] = 0.0
    arange = torch.arange(s, device=device)
    position_ids = arange.unsqueeze(0).expand(b, s).clone()
    # new_doc[j]: token j starts a document because token j-1 was an EOD
    new_doc = torch.zeros_like(is_eod)
    new_doc[:, 1:] = is_eod[:, :-1]
    if reset_position_ids:
        starts = torch.where(new_doc, arange, torch.zeros_like(arange))
        position_ids = arange - torch.cummax(starts, dim=1).values
    attention_mask = None
    if reset_attention_mask:
        doc = torch.cumsum(new_doc.long(), dim=1)  # [b, s] document number of each token
        future = torch.triu(torch.ones(s, s, dtype=torch.bool, device=device), diagonal=1)
        other_doc = doc.unsqueeze(2) != doc.unsqueeze(1)  # [b, s_q, s_k]
        attention_mask = (future.unsqueeze(0) | other_doc).unsqueeze(1)
    return attention_mask, loss_mask, position_ids


def average_losses_across_data_parallel_group(losses: list[torch.Tensor]) -> torch.Tensor:
    """Mean of each loss over the data-parallel ranks (for logging only: detached)."""
    averaged = torch.stack([loss.detach().float().clone() for loss in losses])
    if dist.is_initialized() and parallel_state.get_data_parallel_world_size() > 1:
        dist.all_reduce(averaged, group=parallel_state.get_data_parallel_group())
        averaged /= parallel_state.get_data_parallel_world_size()
    return averaged
