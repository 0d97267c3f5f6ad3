"""Tensor-parallel layers: column/row-split linear layers and a vocab-split embedding.

Every split weight carries ``tensor_model_parallel=True``, ``partition_dim`` and
``partition_stride`` so optimizers, grad-norm code and checkpoint converters know how it
is split. With ``config.use_cpu_initialization`` the whole weight is initialised on CPU
with the global torch RNG and each rank keeps its slice, so a model built under any
tensor-parallel layout holds the same weights as a single-rank model with the same seed.
Otherwise each rank initialises its own partition under the tensor-parallel RNG tracker.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from megatron.core import parallel_state
from megatron.core.tensor_parallel.mappings import (
    copy_to_tensor_model_parallel_region, gather_from_sequence_parallel_region,
    gather_from_tensor_model_parallel_region, reduce_from_tensor_model_parallel_region,
    reduce_scatter_to_sequence_parallel_region, scatter_to_tensor_model_parallel_region)
from megatron.core.tensor_parallel.random import get_rng_tracker
from megatron.core.tensor_parallel.utils import VocabUtility, divide

_TP_ATTRIBUTE_DEFAULTS = {"tensor_model_parallel": False, "partition_dim": -1,
                          "partition_stride": 1}


def set_tensor_model_parallel_attributes(tensor: torch.Tensor, is_parallel: bool, dim: int,
                                         stride: int) -> None:
    """Mark how ``tensor`` is split across the tensor-parallel ranks."""
    tensor.tensor_model_parallel = is_parallel
    tensor.partition_dim = dim
    tensor.partition_stride = stride


def set_defaults_if_not_set_tensor_model_parallel_attributes(tensor: torch.Tensor) -> None:
    for name, value in _TP_ATTRIBUTE_DEFAULTS.items():
        if not hasattr(tensor, name):
            setattr(tensor, name, value)


def copy_tensor_model_parallel_attributes(destination: torch.Tensor, source: torch.Tensor) -> None:
    for name in _TP_ATTRIBUTE_DEFAULTS:
        if hasattr(source, name):
            setattr(destination, name, getattr(source, name))


def param_is_not_tensor_parallel_duplicate(param: torch.Tensor) -> bool:
    """True for split params and, for replicated ones, on tensor-parallel rank 0 only."""
    return (getattr(param, "tensor_model_parallel", False)
            or parallel_state.get_tensor_model_parallel_rank() == 0)


def _init_weight(weight: nn.Parameter, full_shape: tuple[int, int], partition_dim: int,
                 init_method: Callable, config: Any, stride: int = 1) -> None:
    """Initialise this rank's partition ``weight`` of a ``full_shape`` weight."""
    set_tensor_model_parallel_attributes(weight, True, partition_dim, stride)
    tp = parallel_state.get_tensor_model_parallel_world_size()
    if config.use_cpu_initialization:
        master = torch.empty(full_shape, dtype=torch.float32)
        init_method(master)
        rank = parallel_state.get_tensor_model_parallel_rank()
        chunk = divide(divide(full_shape[partition_dim], tp), stride)
        pieces = torch.split(master, chunk, dim=partition_dim)[rank::tp]
        with torch.no_grad():
            weight.copy_(torch.cat(pieces, dim=partition_dim))
        return
    tracker = get_rng_tracker()
    if tracker.is_initialized():
        with tracker.fork():
            init_method(weight)
    elif tp == 1:
        init_method(weight)  # single rank and no tracker: the default RNG is fine
    else:
        raise RuntimeError("tensor-parallel weights need the RNG tracker: call "
                           "megatron.core.tensor_parallel.model_parallel_seed(seed) first, "
                           "or set use_cpu_initialization")


class ColumnParallelLinear(nn.Module):
    """``Y = XA + b`` with ``A`` split by columns: rank i holds ``A_i`` of shape [in, out/tp].

    Args:
        input_size: first dimension of ``A``.
        output_size: second dimension of ``A`` (whole model).
        config: a TransformerConfig (uses params_dtype, use_cpu_initialization,
            sequence_parallel).
        init_method: callable filling a weight tensor in place.
        bias: add a bias (split like the output).
        gather_output: all-gather the output so every rank sees ``[*, out]``.
        skip_bias_add: return the bias instead of adding it (for fusion by the caller).
        stride: interleave factor of the split (2 for a fused [gate; up] SwiGLU weight).
    """

    def __init__(self, input_size: int, output_size: int, *, config: Any, init_method: Callable,
                 bias: bool = True, gather_output: bool = False, skip_bias_add: bool = False,
                 stride: int = 1) -> None:
        super().__init__()
        tp = parallel_state.get_tensor_model_parallel_world_size()
        self.input_size, self.output_size = input_size, output_size
        self.output_size_per_partition = divide(output_size, tp)
        self.gather_output, self.skip_bias_add = gather_output, skip_bias_add
        self.sequence_parallel = config.sequence_parallel and tp > 1
        if self.sequence_parallel and gather_output:
            raise ValueError("ColumnParallelLinear: gather_output is incompatible with "
                             "--sequence-parallel")
        kw = {"dtype": config.params_dtype}  # on CPU; training moves the model to the GPU
        self.weight = nn.Parameter(torch.empty(self.output_size_per_partition, input_size, **kw))
        _init_weight(self.weight, (output_size, input_size), 0, init_method, config, stride)
        if bias:
            self.bias = nn.Parameter(torch.zeros(self.output_size_per_partition, **kw))
            set_tensor_model_parallel_attributes(self.bias, True, 0, stride)
        else:
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` [s, b, in] (or [s/tp, b, in] under sequence parallel) -> ([s, b, out/tp], bias)."""
        if self.sequence_parallel:
            x = gather_from_sequence_parallel_region(x, tensor_parallel_output_grad=True)
        else:
            x = copy_to_tensor_model_parallel_region(x)
        bias = None if self.skip_bias_add else self.bias
        out = F.linear(x, self.weight, bias)
        if self.gather_output:
            out = gather_from_tensor_model_parallel_region(out)
        return out, (self.bias if self.skip_bias_add else None)


class RowParallelLinear(nn.Module):
    """``Y = XA + b`` with ``A`` split by rows: rank i holds ``A_i`` of shape [in/tp, out].

    Args:
        input_size: first dimension of ``A`` (whole model).
        output_size: second dimension of ``A``.
        config: a TransformerConfig.
        init_method: callable filling a weight tensor in place.
        bias: add a (replicated) bias after the reduction.
        input_is_parallel: the input is already split by the last dimension.
        skip_bias_add: return the bias instead of adding it.
    """

    def __init__(self, input_size: int, output_size: int, *, config: Any, init_method: Callable,
                 bias: bool = True, input_is_parallel: bool = True, skip_bias_add: bool = False,
                 stride: int = 1) -> None:
        super().__init__()
        tp = parallel_state.get_tensor_model_parallel_world_size()
        self.input_size, self.output_size = input_size, output_size
        self.input_size_per_partition = divide(input_size, tp)
        self.input_is_parallel, self.skip_bias_add = input_is_parallel, skip_bias_add
        self.sequence_parallel = config.sequence_parallel and tp > 1
        if self.sequence_parallel and not input_is_parallel:
            raise ValueError("RowParallelLinear: --sequence-parallel needs input_is_parallel")
        kw = {"dtype": config.params_dtype}  # on CPU; training moves the model to the GPU
        self.weight = nn.Parameter(torch.empty(output_size, self.input_size_per_partition, **kw))
        _init_weight(self.weight, (output_size, input_size), 1, init_method, config, stride)
        if bias:
            self.bias = nn.Parameter(torch.zeros(output_size, **kw))
            # Replicated; under sequence parallel each rank sees only part of the tokens,
            # so its grad must be summed over the tensor-parallel group.
            self.bias.sequence_parallel = self.sequence_parallel
        else:
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` [s, b, in/tp] -> ([s, b, out] or [s/tp, b, out] under sequence parallel, bias)."""
        if not self.input_is_parallel:
            x = scatter_to_tensor_model_parallel_region(x)
        partial = F.linear(x, self.weight)
        if self.sequence_parallel:
            out = reduce_scatter_to_sequence_parallel_region(partial)
        else:
            out = reduce_from_tensor_model_parallel_region(partial)
        if self.skip_bias_add:
            return out, self.bias
        return (out + self.bias if self.bias is not None else out), None


class VocabParallelEmbedding(nn.Module):
    """Embedding table split along the vocabulary: rank i holds rows ``[i*V/tp, (i+1)*V/tp)``.

    Args:
        num_embeddings: vocabulary size (padded, divisible by the TP size).
        embedding_dim: hidden size.
        init_method: callable filling the table in place.
        config: a TransformerConfig.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, *, init_method: Callable,
                 config: Any) -> None:
        super().__init__()
        tp = parallel_state.get_tensor_model_parallel_world_size()
        rank = parallel_state.get_tensor_model_parallel_rank()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.vocab_start_index, self.vocab_end_index = \
            VocabUtility.vocab_range_from_global_vocab_size(num_embeddings, rank, tp)
        per_partition = self.vocab_end_index - self.vocab_start_index
        kw = {"dtype": config.params_dtype}  # on CPU; training moves the model to the GPU
        self.weight = nn.Parameter(torch.empty(per_partition, embedding_dim, **kw))
        _init_weight(self.weight, (num_embeddings, embedding_dim), 0, init_method, config)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``input_ids`` [b, s] long -> embeddings [b, s, h] (summed over the TP group)."""
        if parallel_state.get_tensor_model_parallel_world_size() == 1:
            return F.embedding(input_ids, self.weight)
        outside = (input_ids < self.vocab_start_index) | (input_ids >= self.vocab_end_index)
        local_ids = (input_ids - self.vocab_start_index).masked_fill(outside, 0)
        out = F.embedding(local_ids, self.weight)
        out = out.masked_fill(outside.unsqueeze(-1), 0.0)
        return reduce_from_tensor_model_parallel_region(out)
