"""Gather / combine operations of random layerwise token dropping (random-LTD).

A dropping layer runs on ``r`` of the ``s`` token positions of every sample: the layer
loop gathers those rows of the hidden states (and of the rotary embeddings and the
attention mask), runs the layer, and combines its output back into the full sequence in
place of the kept rows; the dropped rows pass through unchanged.

Hidden states are ``[s, b, h]`` (sequence first). Kept indices are ``[b, r]`` long,
ascending per row, so a causal order among the kept tokens is the causal order of their
real positions.

Two implementations with bit-identical results:

* ``"triton"``: the fused kernels in ``kernel.py``, one pass each (chosen for CUDA
  tensors; also runs CPU tensors under ``TRITON_INTERPRET=1`` for tests).
* ``"torch"``: a reference path with ``index_select`` / ``index_copy_`` (everything else).

The path is picked per call: the ``impl`` argument, else the environment variable
``MEGATRON_RANDOM_LTD_IMPL`` (``auto`` | ``torch`` | ``triton``), else ``auto``.
"""
from __future__ import annotations

import os

import torch

IMPL_ENV = "MEGATRON_RANDOM_LTD_IMPL"
_IMPLS = ("auto", "torch", "triton")


def _resolve_impl(tensor: torch.Tensor, impl: str | None) -> str:
    """Returns "torch" or "triton" for ``tensor`` given the requested implementation."""
    choice = impl if impl is not None else os.environ.get(IMPL_ENV, "auto")
    if choice not in _IMPLS:
        raise ValueError(f"random-LTD implementation {choice!r} (argument impl or "
                         f"${IMPL_ENV}) must be one of {_IMPLS}")
    if choice == "auto":
        return "triton" if tensor.is_cuda else "torch"
    return choice


def _kernels():
    # Imported lazily: CPU runs never need triton, and tests must be able to set
    # TRITON_INTERPRET before triton is first imported.
    from megatron.data_efficiency.random_ltd import kernel
    return kernel


def flat_row_indices(idx: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Rows of the flattened ``[s * b, ...]`` tensor that hold the kept tokens.

    Args:
        idx: kept positions, ``[b, r]`` long.
        batch_size: ``b``.

    Returns:
        ``[r * b]`` long, in the order of the gathered ``[r, b]`` rows.
    """
    batch = torch.arange(batch_size, device=idx.device, dtype=torch.long)
    return (idx.t().long() * batch_size + batch).reshape(-1)  # [r * b]


def inverse_row_map(flat: torch.Tensor, num_rows: int) -> torch.Tensor:
    """For every row of the flattened full tensor, the gathered row it came from, or -1.

    Args:
        flat: ``[r * b]`` rows from :func:`flat_row_indices`.
        num_rows: ``s * b``.

    Returns:
        ``[s * b]`` int64.
    """
    inv = torch.full((num_rows,), -1, dtype=torch.long, device=flat.device)
    inv[flat] = torch.arange(flat.numel(), dtype=torch.long, device=flat.device)
    return inv


def _check_idx(x: torch.Tensor, idx: torch.Tensor, name: str) -> None:
    if idx.dim() != 2 or idx.size(0) != x.size(1):
        raise ValueError(f"{name}: kept indices must be [b={x.size(1)}, r], got "
                         f"{tuple(idx.shape)}")
    if idx.size(1) > x.size(0):
        raise ValueError(f"{name}: keeping {idx.size(1)} of only {x.size(0)} tokens")


class _GatherTokens(torch.autograd.Function):
    """``[s, b, *] -> [r, b, *]``; backward scatters into zeros."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, idx: torch.Tensor, impl: str) -> torch.Tensor:
        s, b = x.shape[:2]
        r = idx.size(1)
        rest = x.shape[2:]
        flat = flat_row_indices(idx, b)
        src = x.contiguous().view(s * b, -1)
        if impl == "triton":
            out = _kernels().gather_rows(src, flat)
        else:
            out = src.index_select(0, flat)
        ctx.save_for_backward(flat)
        ctx.shape = (s, b, r, rest, impl)
        return out.view(r, b, *rest)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (flat,) = ctx.saved_tensors
        s, b, r, rest, impl = ctx.shape
        grad = grad.contiguous().view(r * b, -1)
        if impl == "triton":
            inv = inverse_row_map(flat, s * b)
            grad_x = _kernels().select_rows(grad, None, inv)
        else:
            grad_x = grad.new_zeros(s * b, grad.size(1))
            grad_x.index_copy_(0, flat, grad)
        return grad_x.view(s, b, *rest), None, None


class _CombineTokens(torch.autograd.Function):
    """``full [s, b, h]`` with rows ``idx`` replaced by ``part [r, b, h]``."""

    @staticmethod
    def forward(ctx, full: torch.Tensor, part: torch.Tensor, idx: torch.Tensor,
                impl: str) -> torch.Tensor:
        s, b = full.shape[:2]
        r = idx.size(1)
        rest = full.shape[2:]
        flat = flat_row_indices(idx, b)
        full2 = full.contiguous().view(s * b, -1)
        part2 = part.contiguous().view(r * b, -1)
        if impl == "triton":
            inv = inverse_row_map(flat, s * b)
            out = _kernels().select_rows(part2, full2, inv)
            ctx.save_for_backward(flat, inv)
        else:
            out = full2.clone()
            out.index_copy_(0, flat, part2)
            ctx.save_for_backward(flat)
        ctx.shape = (s, b, r, rest, impl)
        return out.view(s, b, *rest)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        s, b, r, rest, impl = ctx.shape
        grad = grad.contiguous().view(s * b, -1)
        if impl == "triton":
            flat, inv = ctx.saved_tensors
            grad_full, grad_part = _kernels().split_rows(grad, inv, r * b)
        else:
            (flat,) = ctx.saved_tensors
            grad_part = grad.index_select(0, flat)
            grad_full = grad.index_fill(0, flat, 0)
        return grad_full.view(s, b, *rest), grad_part.view(r, b, *rest), None, None


def gather_tokens(x: torch.Tensor, idx: torch.Tensor, impl: str | None = None) -> torch.Tensor:
    """Keeps the rows ``idx`` of every sample.

    Args:
        x: ``[s, b, *]`` hidden states or rotary embeddings. A batch dimension of 1
            (broadcast rotary tables) is gathered for every sample.
        idx: ``[b, r]`` long kept positions, ascending per row.
        impl: ``"auto"`` / ``"torch"`` / ``"triton"``; ``None`` reads ``$MEGATRON_RANDOM_LTD_IMPL``.

    Returns:
        ``[r, b, *]``; differentiable with respect to ``x``.
    """
    if x.size(1) == 1 and idx.size(0) > 1:
        # A table shared by all samples: plain advanced indexing (rare, small).
        return x[:, 0][idx.t()]  # [r, b, *]
    _check_idx(x, idx, "gather_tokens")
    return _GatherTokens.apply(x, idx, _resolve_impl(x, impl))


def combine_tokens(full: torch.Tensor, part: torch.Tensor, idx: torch.Tensor,
                   impl: str | None = None) -> torch.Tensor:
    """Puts a layer's output on the kept tokens back into the full sequence.

    Args:
        full: ``[s, b, h]`` hidden states before the layer (dropped rows pass through).
        part: ``[r, b, h]`` the layer's output on the gathered rows.
        idx: ``[b, r]`` long kept positions, distinct per row.
        impl: as in :func:`gather_tokens`.

    Returns:
        ``[s, b, h]``; differentiable with respect to ``full`` and ``part``.
    """
    _check_idx(full, idx, "combine_tokens")
    if part.shape[0] != idx.size(1) or part.shape[1:] != full.shape[1:]:
        raise ValueError(f"combine_tokens: part {tuple(part.shape)} does not fit full "
                         f"{tuple(full.shape)} with {idx.size(1)} kept tokens")
    if part.dtype != full.dtype:
        raise ValueError(f"combine_tokens: part is {part.dtype}, full is {full.dtype}")
    return _CombineTokens.apply(full, part, idx, _resolve_impl(full, impl))


def gather_attention_mask(mask: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor | None:
    """Keeps the rows and columns ``idx`` of an attention mask.

    Args:
        mask: ``None`` (plain causal: still causal among sorted kept tokens) or bool
            ``[b or 1, 1, s, s]`` with ``True`` = masked out.
        idx: ``[b, r]`` long kept positions, ascending per row.

    Returns:
        ``None`` or bool ``[b, 1, r, r]``.
    """
    if mask is None:
        return None
    if mask.dim() != 4 or mask.size(1) != 1 or mask.size(2) != mask.size(3):
        raise ValueError(f"gather_attention_mask: mask must be [b|1, 1, s, s], got "
                         f"{tuple(mask.shape)}")
    b, r = idx.shape
    s = mask.size(-1)
    if mask.size(0) not in (1, b):
        raise ValueError(f"gather_attention_mask: mask batch {mask.size(0)} is neither 1 nor {b}")
    m = mask[:, 0].expand(b, s, s)  # [b, s, s], no copy for a shared mask
    rows = torch.gather(m, 1, idx.unsqueeze(2).expand(b, r, s))  # [b, r, s]
    cols = torch.gather(rows, 2, idx.unsqueeze(1).expand(b, r, r))  # [b, r, r]
    return cols.unsqueeze(1)
