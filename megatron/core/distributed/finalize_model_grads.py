"""Make every rank's gradients final before the optimizer step.

After the forward/backward schedule each rank holds gradients of its own micro-batches
only. Three reductions turn them into the gradients of the whole global batch:

1. Data parallel: average over the data-parallel group. Parameters with a gradient buffer
   (``grad_buffer.GradBuffer``, built with the optimizer) are reduced in place, the whole
   buffer in ~32 MB views; a buffer of the distributed optimizer is skipped here (its
   step reduce-scatters it). Parameters without one (a model with no optimizer yet) are
   reduced from ``.grad`` in flat buckets. FSDP2-sharded parameters (``core.distributed.
   fsdp``) are skipped: FSDP's backward reduce-scattered them.
2. Sequence parallel: layer-norm (and other replicated) weights marked
   ``sequence_parallel=True`` saw only this rank's slice of the sequence, so their
   gradients are summed over the tensor-parallel group (under FSDP2 the shards: every TP
   rank shards them alike).
3. Pipeline parallel: the word embedding is used by the first stage (input embedding) and
   the last stage (output layer, tied weights). Each stage holds its own copy; summing
   their gradients over the embedding group keeps the two copies identical after the step.

Gradients are read from ``param.main_grad`` when it has one, else from ``param.grad`` (the
optimizer reads them the same way).
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.distributed as dist
from torch import nn

from megatron.core import parallel_state
from megatron.core.distributed.fsdp import is_sharded_param
from megatron.core.distributed.grad_buffer import grad_buffers_of
from megatron.core.distributed.grads import grad_buffer

DEFAULT_BUCKET_SIZE_MB = 32.0


def _trainable(model_chunks: Iterable[nn.Module]) -> list[nn.Parameter]:
    seen: set[int] = set()
    params = []
    for chunk in model_chunks:
        for p in chunk.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return params


def _buckets(grads: list[torch.Tensor], bucket_bytes: int) -> list[list[torch.Tensor]]:
    """Group tensors of one dtype/device into buckets of at most ~bucket_bytes each."""
    by_kind: dict[tuple, list[torch.Tensor]] = {}
    for g in grads:
        by_kind.setdefault((g.dtype, g.device), []).append(g)
    buckets = []
    for tensors in by_kind.values():
        current, size = [], 0
        for t in tensors:
            current.append(t)
            size += t.numel() * t.element_size()
            if size >= bucket_bytes:
                buckets.append(current)
                current, size = [], 0
        if current:
            buckets.append(current)
    return buckets


def all_reduce_bucketed(tensors: list[torch.Tensor], group, average: bool,
                        bucket_size_mb: float = DEFAULT_BUCKET_SIZE_MB) -> None:
    """Sum (or average) tensors in place over ``group``, one flat collective per bucket.

    Args:
        tensors: dense tensors; each bucket holds one dtype and device.
        group: the process group.
        average: divide by the group size after summing.
        bucket_size_mb: target bucket size.
    """
    size = dist.get_world_size(group=group)
    for bucket in _buckets(tensors, int(bucket_size_mb * 1024 * 1024)):
        flat = torch.cat([t.reshape(-1) for t in bucket])
        if average:
            # Divide first: keeps fp16/bf16 sums in range, same result in fp32.
            flat.div_(size)
        dist.all_reduce(flat, group=group)
        offset = 0
        for t in bucket:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def allreduce_data_parallel_grads(model_chunks: list[nn.Module],
                                  bucket_size_mb: float = DEFAULT_BUCKET_SIZE_MB) -> None:
    """Average the gradients of every trainable parameter over the data-parallel group."""
    if parallel_state.get_data_parallel_world_size() == 1:
        return
    params = _trainable(model_chunks)
    for buffer in grad_buffers_of(params):
        if not buffer.sharded:     # the distributed optimizer reduce-scatters its own
            buffer.all_reduce(int(bucket_size_mb * 1024 * 1024) // buffer.grad_data.element_size())
    loose = [p for p in params if getattr(p, "main_grad_buffer", None) is None
             and not is_sharded_param(p)]
    grads = [grad_buffer(p, allocate=True) for p in loose
             if not getattr(p, "expert_parallel", False)]
    if grads:
        all_reduce_bucketed(grads, parallel_state.get_data_parallel_group(), average=True,
                            bucket_size_mb=bucket_size_mb)
    allreduce_expert_grads(loose, bucket_size_mb)


def allreduce_expert_grads(params: list[nn.Parameter],
                           bucket_size_mb: float = DEFAULT_BUCKET_SIZE_MB) -> None:
    """MoE expert parameters (``expert_parallel=True``) without a gradient buffer differ
    across the expert-parallel ranks: sum them over the expert-data-parallel group (the
    ranks holding the same experts), divided by the data-parallel size like every other
    gradient (the all-to-all backward already summed the contributions of the
    expert-parallel ranks' tokens)."""
    grads = [grad_buffer(p, allocate=True) for p in params
             if getattr(p, "expert_parallel", False)]
    if not grads:
        return
    all_reduce_bucketed(grads, parallel_state.get_expert_data_parallel_group(), average=True,
                        bucket_size_mb=bucket_size_mb)
    ep = parallel_state.get_expert_model_parallel_world_size()
    if ep > 1:
        torch._foreach_div_(grads, float(ep))


def allreduce_sequence_parallel_grads(model_chunks: list[nn.Module]) -> None:
    """Sum gradients of parameters marked ``sequence_parallel`` over the TP group."""
    if parallel_state.get_tensor_model_parallel_world_size() == 1:
        return
    grads = [grad_buffer(p, allocate=True) for p in _trainable(model_chunks)
             if getattr(p, "sequence_parallel", False)]
    if grads:
        all_reduce_bucketed(grads, parallel_state.get_tensor_model_parallel_group(),
                            average=False)


def shared_embedding_params(model_chunks: list[nn.Module]) -> list[nn.Parameter]:
    """The copies of the tied word embedding held by this rank.

    Found by the ``shared_embedding=True`` attribute the model puts on both the first
    stage's input embedding and the last stage's output weight (only when they are tied).
    """
    return [p for p in _trainable(model_chunks) if getattr(p, "shared_embedding", False)]


def allreduce_embedding_grads(model_chunks: list[nn.Module]) -> None:
    """Sum the word-embedding gradient of the first and the last pipeline stage."""
    if parallel_state.get_pipeline_model_parallel_world_size() == 1:
        return  # one copy only: the tied weight already got both contributions
    if not parallel_state.is_rank_in_embedding_group():
        return
    params = shared_embedding_params(model_chunks)
    if len(params) > 1:
        raise RuntimeError(f"found {len(params)} parameters marked shared_embedding on "
                           "one pipeline stage; expected at most one")
    if not params:
        return  # untied input/output embeddings: nothing to keep in sync
    grad = grad_buffer(params[0], allocate=True)
    dist.all_reduce(grad, group=parallel_state.get_embedding_group())


def finalize_model_grads(model_chunks: list[nn.Module],
                         bucket_size_mb: float = DEFAULT_BUCKET_SIZE_MB) -> None:
    """Reduce gradients across DP, sequence-parallel TP, and the tied embedding.

    Call after the forward/backward schedule and before the optimizer step. A no-op in a
    single process. The distributed optimizer's buffers skip the data-parallel all-reduce
    (its step reduce-scatters them).

    Args:
        model_chunks: the model chunks of this rank (one unless interleaving).
        bucket_size_mb: size of the flat buckets of the data-parallel all-reduce.
    """
    if isinstance(model_chunks, nn.Module):
        model_chunks = [model_chunks]
    allreduce_data_parallel_grads(model_chunks, bucket_size_mb)
    allreduce_sequence_parallel_grads(model_chunks)
    allreduce_embedding_grads(model_chunks)
