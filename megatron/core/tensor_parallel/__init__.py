"""Tensor-parallel building blocks: collectives, split layers, cross entropy, RNG."""
from megatron.core.tensor_parallel.cross_entropy import (mask_padded_vocab,
                                                       vocab_parallel_cross_entropy)
from megatron.core.tensor_parallel.layers import (
    ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding,
    copy_tensor_model_parallel_attributes, param_is_not_tensor_parallel_duplicate,
    set_defaults_if_not_set_tensor_model_parallel_attributes,
    set_tensor_model_parallel_attributes)
from megatron.core.tensor_parallel.mappings import (
    copy_to_tensor_model_parallel_region, gather_from_sequence_parallel_region,
    gather_from_tensor_model_parallel_region, reduce_from_tensor_model_parallel_region,
    reduce_scatter_to_sequence_parallel_region, scatter_to_sequence_parallel_region,
    scatter_to_tensor_model_parallel_region)
from megatron.core.tensor_parallel.random import (
    RNGStatesTracker, checkpoint, get_cuda_rng_tracker, get_rng_tracker,
    model_parallel_cuda_manual_seed, model_parallel_seed)
from megatron.core.tensor_parallel.utils import (
    VocabUtility, divide, ensure_divisibility, split_tensor_along_last_dim)

__all__ = [
    "vocab_parallel_cross_entropy", "mask_padded_vocab", "ColumnParallelLinear", "RowParallelLinear",
    "VocabParallelEmbedding", "copy_tensor_model_parallel_attributes",
    "param_is_not_tensor_parallel_duplicate",
    "set_defaults_if_not_set_tensor_model_parallel_attributes",
    "set_tensor_model_parallel_attributes", "copy_to_tensor_model_parallel_region",
    "gather_from_sequence_parallel_region", "gather_from_tensor_model_parallel_region",
    "reduce_from_tensor_model_parallel_region", "reduce_scatter_to_sequence_parallel_region",
    "scatter_to_sequence_parallel_region", "scatter_to_tensor_model_parallel_region",
    "RNGStatesTracker", "checkpoint", "get_cuda_rng_tracker", "get_rng_tracker",
    "model_parallel_cuda_manual_seed", "model_parallel_seed", "VocabUtility", "divide",
    "ensure_divisibility", "split_tensor_along_last_dim",
]
