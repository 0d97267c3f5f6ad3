"""The load-balancing loss's way into the gradient, and the per-step MoE figures.

The auxiliary loss of a layer is attached to that layer's output: the forward pass is the
identity, and the backward pass gives the loss its gradient ``coeff * scale``, with
``scale`` the factor the LM loss of one micro-batch gets before its backward pass
(``loss_scale / num_microbatches``, set each step by the training loop). This is the
same as adding ``coeff * aux`` to the LM loss, on every pipeline stage, without sending
the auxiliary losses down the pipeline (Megatron-LM's ``MoEAuxLossAutoScaler``).
"""
from __future__ import annotations

import torch

_GRAD_SCALE = 1.0


def set_aux_loss_grad_scale(scale: float) -> None:
    """The factor each micro-batch's LM loss is multiplied by before backward."""
    global _GRAD_SCALE
    _GRAD_SCALE = float(scale)


class _AttachAuxLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, output: torch.Tensor, aux_loss: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(aux_loss)
        return output

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (aux_loss,) = ctx.saved_tensors
        return grad, torch.full_like(aux_loss, _GRAD_SCALE)


def attach_aux_loss(output: torch.Tensor, aux_loss: torch.Tensor) -> torch.Tensor:
    """``output`` unchanged; backward adds d(aux_loss)/d(params) x the LM loss scale.

    Args:
        output: the MoE layer's output [s, b, h].
        aux_loss: scalar, already multiplied by its coefficient.
    """
    return _AttachAuxLoss.apply(output, aux_loss)


class MoEStepStats:
    """What one MoE layer routed during the current step (training forwards only).

    Attributes:
        aux_loss: sum over micro-batches of the (uncoefficiented) load-balancing loss.
        forwards: micro-batches seen.
        tokens_per_expert: [E] assignments per expert before capacity.
        dropped: assignments dropped by capacity.
    """

    def __init__(self, num_experts: int) -> None:
        self.num_experts = num_experts
        self.reset()

    def reset(self) -> None:
        self.aux_loss = 0.0
        self.forwards = 0
        self.tokens_per_expert = torch.zeros(self.num_experts, dtype=torch.float64)
        self.dropped = 0.0

    def add(self, aux_loss: torch.Tensor, counts: torch.Tensor, dropped: int) -> None:
        self.aux_loss = self.aux_loss + aux_loss.detach().double().cpu()
        self.forwards += 1
        self.tokens_per_expert += counts.detach().to("cpu", torch.float64)
        self.dropped += float(dropped)

    def as_vector(self) -> torch.Tensor:
        """[3 + E] float64: aux-loss sum, micro-batches, dropped, tokens per expert."""
        head = torch.tensor([float(self.aux_loss), float(self.forwards), self.dropped],
                            dtype=torch.float64)
        return torch.cat([head, self.tokens_per_expert])
