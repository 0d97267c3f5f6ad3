"""Tensor-parallel layers: column/row-split linear layers and a vocab-split embedding.

Every split weight carries ``tensor_model_parallel=True``, ``partition_dim`` and
``partition_stride`` so optimizers, grad-norm code and checkpoint converters know how it
is split. With ``config.use_cpu_initialization`` the whole weight is initialised on CPU
and each rank keeps its slice. Inside an :func:`init_scope` (the models open one per
transformer layer, embedding and head) that whole weight is drawn from a generator keyed
by (seed, scope name, position in the scope), so it does not depend on which other
weights this process built before it: a model built under any tensor *and pipeline*
layout holds the same weights as the single-process model with the same seed. Outside a
scope the global torch RNG stream is used. Without ``use_cpu_initialization`` each rank
initialises its own partition under the tensor-parallel RNG tracker (as Megatron does).
"""
from __future__ import annotations

import contextlib
import hashlib
from typing import Any, Callable, Iterator

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


# ---------------------------------------------------------------- keyed CPU initialisation

_INIT_SCOPES: list[list] = []          # stack of [name, weights initialised in it so far]
_INIT_SEED: tuple[int, int] | None = None   # (base seed, torch seed when it was set)


def set_initialization_seed(seed: int) -> None:
    """Key scoped initialisation by ``seed`` rather than by the torch seed.

    ``megatron.initialize.set_seeds`` seeds torch with ``seed + 100 * pp_rank`` (different
    dropout per stage) and registers the base seed here, so every stage draws its weights
    from the same keys. The registration lapses as soon as torch is reseeded.
    """
    global _INIT_SEED
    _INIT_SEED = (int(seed), torch.initial_seed())


def initialization_seed() -> int:
    """The registered base seed, or ``torch.initial_seed()`` when torch was seeded since."""
    if _INIT_SEED is not None and _INIT_SEED[1] == torch.initial_seed():
        return _INIT_SEED[0]
    return torch.initial_seed()


@contextlib.contextmanager
def init_scope(name: str) -> Iterator[None]:
    """Weights initialised inside get keys ``outer.name#k`` (k counts within the scope).

    Args:
        name: a layout-independent name, e.g. ``layers.7`` with the *global* layer id.
    """
    _INIT_SCOPES.append([name, 0])
    try:
        yield
    finally:
        _INIT_SCOPES.pop()


def _next_init_key() -> str | None:
    if not _INIT_SCOPES:
        return None
    top = _INIT_SCOPES[-1]
    top[1] += 1
    return ".".join(name for name, _ in _INIT_SCOPES) + f"#{top[1] - 1}"


def init_whole_weight(shape: tuple[int, ...], init_method: Callable,
                      keyed: bool = True) -> torch.Tensor:
    """A whole fp32 weight of ``shape``, filled by ``init_method`` on CPU.

    Args:
        shape: the full (unsplit) shape.
        init_method: callable filling a tensor in place from the torch RNG.
        keyed: inside an :func:`init_scope`, draw from a generator seeded by
            (initialization_seed(), scope key), leaving the global RNG untouched;
            otherwise (or outside any scope) draw from the global RNG stream.
    """
    master = torch.empty(shape, dtype=torch.float32)
    key = _next_init_key() if keyed else None
    if key is None:
        init_method(master)
        return master
    digest = hashlib.sha256(f"{initialization_seed()}/{key}".encode()).digest()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int.from_bytes(digest[:8], "little") >> 1)
        init_method(master)
    return master


def _init_weight(weight: nn.Parameter, full_shape: tuple[int, int], partition_dim: int,
                 init_method: Callable, config: Any, stride: int = 1) -> None:
    """Initialise this rank's partition ``weight`` of a ``full_shape`` weight."""
    set_tensor_model_parallel_attributes(weight, True, partition_dim, stride)
    tp = parallel_state.get_tensor_model_parallel_world_size()
    if config.use_cpu_initialization:
        master = init_whole_weight(full_shape, init_method)
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
