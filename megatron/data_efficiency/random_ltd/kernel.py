"""Fused Triton kernels for random-LTD gather / combine (forward and backward).

All kernels work on 2-D row views: a ``[s, b, h]`` tensor is ``[s * b, h]`` and the kept
tokens are the rows ``flat = idx.T * b + arange(b)`` (``ops.flat_row_indices``); ``inv``
maps every full row to its gathered row or ``-1`` (``ops.inverse_row_map``). Each program
instance copies one row tile of ``BLOCK_H`` features, so there is no sort and no limit on
the sequence length (the reference implementation's sort kernel stopped at 2048 tokens).

* :func:`gather_rows`  ``dst[i] = src[flat[i]]``  (gather forward, combine's grad of part)
* :func:`select_rows`  ``out[j] = part[inv[j]] if inv[j] >= 0 else full[j] (or 0)``
  (combine forward in one pass; with ``full=None`` it is gather's backward, a scatter
  into zeros, also one pass)
* :func:`split_rows`   ``grad_full[j] = 0 if kept else grad[j]``, ``grad_part[inv[j]] =
  grad[j]``: combine's backward in one read of the gradient.

Runs on CUDA tensors, or on CPU tensors when ``TRITON_INTERPRET=1`` was set before
triton was imported (tests).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

_MAX_BLOCK_H = 2048


def _block_h(h: int) -> int:
    return min(triton.next_power_of_2(max(h, 1)), _MAX_BLOCK_H)


@triton.jit
def _gather_rows_kernel(src_ptr, rows_ptr, dst_ptr, H, BLOCK_H: tl.constexpr):
    out_row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    in_h = offs < H
    src_row = tl.load(rows_ptr + out_row).to(tl.int64)
    vals = tl.load(src_ptr + src_row * H + offs, mask=in_h)
    tl.store(dst_ptr + out_row * H + offs, vals, mask=in_h)


@triton.jit
def _select_rows_kernel(part_ptr, full_ptr, inv_ptr, out_ptr, H,
                        HAS_FULL: tl.constexpr, BLOCK_H: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    in_h = offs < H
    src = tl.load(inv_ptr + row).to(tl.int64)
    kept = src >= 0
    # Masked loads: a row reads either the layer output or the pass-through, never both.
    vals = tl.load(part_ptr + tl.maximum(src, 0) * H + offs, mask=in_h & kept, other=0)
    if HAS_FULL:
        passed = tl.load(full_ptr + row * H + offs, mask=in_h & (src < 0), other=0)
        vals = tl.where(kept, vals, passed)
    tl.store(out_ptr + row * H + offs, vals, mask=in_h)


@triton.jit
def _split_rows_kernel(grad_ptr, inv_ptr, grad_full_ptr, grad_part_ptr, H,
                       BLOCK_H: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    in_h = offs < H
    grad = tl.load(grad_ptr + row * H + offs, mask=in_h)
    dst = tl.load(inv_ptr + row).to(tl.int64)
    kept = dst >= 0
    tl.store(grad_full_ptr + row * H + offs, tl.where(kept, tl.zeros_like(grad), grad),
             mask=in_h)
    tl.store(grad_part_ptr + tl.maximum(dst, 0) * H + offs, grad, mask=in_h & kept)


def _check_2d(name: str, t: torch.Tensor) -> None:
    if t.dim() != 2 or not t.is_contiguous():
        raise ValueError(f"random-LTD kernel: {name} must be a contiguous 2-D row view, got "
                         f"shape {tuple(t.shape)} contiguous={t.is_contiguous()}")


def gather_rows(src: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``src[rows]`` for a contiguous ``[n, h]`` ``src`` and ``[m]`` long ``rows`` -> ``[m, h]``."""
    _check_2d("src", src)
    rows = rows.contiguous()
    h = src.size(1)
    out = src.new_empty(rows.numel(), h)
    if out.numel():
        block = _block_h(h)
        _gather_rows_kernel[(rows.numel(), triton.cdiv(h, block))](src, rows, out, h,
                                                                 BLOCK_H=block)
    return out


def select_rows(part: torch.Tensor, full: torch.Tensor | None, inv: torch.Tensor) -> torch.Tensor:
    """Row ``j`` is ``part[inv[j]]`` where ``inv[j] >= 0``, else ``full[j]`` (or zeros).

    Args:
        part: ``[m, h]`` contiguous.
        full: ``[n, h]`` contiguous, or ``None`` for zeros.
        inv: ``[n]`` long.

    Returns:
        ``[n, h]``.
    """
    _check_2d("part", part)
    if full is not None:
        _check_2d("full", full)
    inv = inv.contiguous()
    h = part.size(1)
    out = part.new_empty(inv.numel(), h)
    if out.numel():
        block = _block_h(h)
        _select_rows_kernel[(inv.numel(), triton.cdiv(h, block))](
            part, part if full is None else full, inv, out, h,
            HAS_FULL=full is not None, BLOCK_H=block)
    return out


def split_rows(grad: torch.Tensor, inv: torch.Tensor,
               num_part_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Combine's backward: ``(grad with kept rows zeroed, grad of the kept rows)``.

    Args:
        grad: ``[n, h]`` contiguous gradient of the combined output.
        inv: ``[n]`` long, gathered row of every full row or -1.
        num_part_rows: ``m``, rows of the gathered part.

    Returns:
        ``grad_full [n, h]`` and ``grad_part [m, h]``.
    """
    _check_2d("grad", grad)
    inv = inv.contiguous()
    h = grad.size(1)
    grad_full = torch.empty_like(grad)
    grad_part = grad.new_empty(num_part_rows, h)
    if grad.numel():
        block = _block_h(h)
        _split_rows_kernel[(grad.size(0), triton.cdiv(h, block))](
            grad, inv, grad_full, grad_part, h, BLOCK_H=block)
    return grad_full, grad_part
