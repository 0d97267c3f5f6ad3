"""Model base class (tied word embedding across pipeline stages) and Float16Module."""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from megatron.core import parallel_state, tensor_parallel
from megatron.core.devices import collective_device
from megatron.core.tensor_parallel.layers import init_scope


class MegatronModule(nn.Module):
    """Base of GPT/BERT: owns the last stage's copy of the tied word embedding.

    Subclasses set ``self.config``, ``self.pre_process``, ``self.post_process`` and, on the
    first stage, ``self.embedding`` (with ``.word_embeddings``), then call
    ``setup_output_embedding()``.
    """

    def setup_output_embedding(self) -> None:
        """Create the last stage's embedding copy (PP > 1, tied) and synchronise it."""
        config = self.config
        self.word_embeddings = None
        if config.untie_embeddings_and_output_weights:
            return
        if self.post_process and not self.pre_process:
            with init_scope("embedding"):  # the key of the first stage's table
                self.word_embeddings = tensor_parallel.VocabParallelEmbedding(
                    config.padded_vocab_size, config.hidden_size,
                    init_method=config.init_method, config=config)
            self.word_embeddings.weight.shared_embedding = True
        if self.pre_process and not self.post_process:
            self.embedding.word_embeddings.weight.shared_embedding = True
        self.initialize_word_embeddings()

    def initialize_word_embeddings(self) -> None:
        """Make the last stage's embedding copy equal to the first stage's.

        Runs once at construction on every rank of the embedding group (first and last
        pipeline stages): the last stage zeroes its copy and the group sums, as in
        Megatron. Afterwards finalize_model_grads keeps the two in step by all-reducing
        the grads of the params marked ``shared_embedding``.
        """
        if self.config.untie_embeddings_and_output_weights:
            return
        if parallel_state.get_pipeline_model_parallel_world_size() == 1:
            return
        if self.pre_process == self.post_process:
            return  # a middle stage, or one chunk holding both ends: nothing to sync
        weight = self.shared_embedding_weight()
        group = parallel_state.get_embedding_group()
        with torch.no_grad():
            if not self.pre_process:
                weight.zero_()
            buf = weight.data.to(collective_device(group))   # built on the CPU before .cuda()
            dist.all_reduce(buf, group=group)
            if buf is not weight.data:
                weight.data.copy_(buf)

    def shared_embedding_weight(self) -> torch.Tensor:
        """The word embedding used for input and (tied) output on this stage: [v/tp, h]."""
        if self.pre_process:
            return self.embedding.word_embeddings.weight
        if self.word_embeddings is None:
            raise RuntimeError("this pipeline stage holds no word embedding")
        return self.word_embeddings.weight


def _cast_floats(value: Any, dtype: torch.dtype) -> Any:
    if torch.is_tensor(value) and value.is_floating_point():
        return value.to(dtype)
    if isinstance(value, (list, tuple)):
        return type(value)(_cast_floats(v, dtype) for v in value)
    return value


class Float16Module(nn.Module):
    """Holds ``module`` in half precision (``--bf16`` / ``--fp16``).

    Floating inputs of the first pipeline stage are cast to the half dtype; the last
    stage's outputs (loss or logits) are returned in fp32. Integer inputs (token ids,
    labels) and bool masks pass untouched.

    Args:
        module: the fp32 model to convert.
        dtype: torch.bfloat16 or torch.float16.
    """

    def __init__(self, module: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        if dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(f"Float16Module needs bfloat16 or float16, got {dtype}")
        self.dtype = dtype
        self.module = module.to(dtype)

    def set_input_tensor(self, input_tensor) -> None:
        self.module.set_input_tensor(input_tensor)

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        if parallel_state.is_pipeline_first_stage():
            inputs = _cast_floats(inputs, self.dtype)
            kwargs = {k: _cast_floats(v, self.dtype) for k, v in kwargs.items()}
        outputs = self.module(*inputs, **kwargs)
        if parallel_state.is_pipeline_last_stage():
            outputs = _cast_floats(outputs, torch.float32)
        return outputs

    def state_dict(self, *args: Any, **kwargs: Any) -> dict:
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: dict, strict: bool = True):
        return self.module.load_state_dict(state_dict, strict=strict)
