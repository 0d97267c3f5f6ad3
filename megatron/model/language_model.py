"""Input embedding (word + learned position + optional token type) and output logits."""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from megatron.core import parallel_state, tensor_parallel
from megatron.core.tensor_parallel.layers import init_scope, init_whole_weight
from megatron.model.config import TransformerConfig
from megatron.model.dropout import tp_rng_fork


class Embedding(nn.Module):
    """Word embeddings (vocab-parallel) + learned absolute positions (skipped under rope).

    Args:
        config: the model config.
        num_tokentypes: size of the token-type table (BERT segments); 0 for none.
    """

    def __init__(self, config: TransformerConfig, num_tokentypes: int = 0) -> None:
        super().__init__()
        self.config = config
        # Keyed by name (with use_cpu_initialization): the last pipeline stage builds its
        # tied copy under the same scope (MegatronModule.setup_output_embedding).
        with init_scope("embedding"):
            self.word_embeddings = tensor_parallel.VocabParallelEmbedding(
                config.padded_vocab_size, config.hidden_size, init_method=config.init_method,
                config=config)
            self.position_embeddings = None
            if config.position_embedding_type == "learned_absolute":
                self.position_embeddings = self._table(config.max_position_embeddings)
            self.tokentype_embeddings = \
                self._table(num_tokentypes) if num_tokentypes > 0 else None
        self.embedding_dropout = config.hidden_dropout

    def _table(self, rows: int) -> nn.Embedding:
        # Replicated: keyed (use_cpu_initialization) or the default RNG, both equal on
        # all TP ranks.
        table = nn.Embedding(rows, self.config.hidden_size, dtype=self.config.params_dtype)
        with torch.no_grad():
            table.weight.copy_(init_whole_weight((rows, self.config.hidden_size),
                                                 self.config.init_method,
                                                 keyed=self.config.use_cpu_initialization))
        return table

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None,
                tokentype_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``input_ids``/``position_ids`` [b, s] -> embeddings [s, b, h] ([s/tp, b, h] with SP)."""
        emb = self.word_embeddings(input_ids)  # [b, s, h]
        if self.position_embeddings is not None:
            if position_ids is None:
                raise ValueError("learned_absolute position embeddings need position_ids")
            check_positions(position_ids, self.config.max_position_embeddings)
            emb = emb + self.position_embeddings(position_ids)
        if self.tokentype_embeddings is not None and tokentype_ids is not None:
            emb = emb + self.tokentype_embeddings(tokentype_ids)
        emb = emb.transpose(0, 1).contiguous()  # [s, b, h]
        rng = contextlib.nullcontext()
        if self.config.sequence_parallel and \
                parallel_state.get_tensor_model_parallel_world_size() > 1:
            emb = tensor_parallel.scatter_to_sequence_parallel_region(emb)
            rng = tp_rng_fork()  # ranks now hold different tokens: different masks
        with rng:
            return F.dropout(emb, p=self.embedding_dropout, training=self.training)


def check_positions(position_ids: torch.Tensor, max_positions: int) -> None:
    """One clear error, before the lookup, for positions past the table, on every device.

    The batches of this codebase number positions ``0..s-1`` (restarting after an EOD under
    ``--reset-position-ids``), so ``s <= max_positions`` is checked from the shape, with no
    host sync. Positions given by other callers on the CPU are also checked by value
    (free there); on an accelerator a value check would stop the step for a device-to-host
    copy, so it is not made.

    Args:
        position_ids: [b, s] long.
        max_positions: rows of the position table (``--max-position-embeddings``).
    """
    s = position_ids.shape[-1]
    if s > max_positions:
        raise ValueError(f"a sequence of {s} tokens needs positions up to {s - 1}, past "
                         f"--max-position-embeddings {max_positions}")
    if position_ids.device.type == "cpu" and position_ids.numel():
        largest = int(position_ids.max())
        if largest >= max_positions:
            raise ValueError(f"position id {largest} is out of range for "
                             f"--max-position-embeddings {max_positions}")


def parallel_lm_logits(hidden: torch.Tensor, word_embeddings_weight: torch.Tensor,
                       parallel_output: bool, sequence_parallel: bool = False) -> torch.Tensor:
    """Logits against this rank's vocabulary slice.

    Args:
        hidden: [s, b, h] ([s/tp, b, h] under sequence parallel).
        word_embeddings_weight: [v/tp, h].
        parallel_output: keep the vocab split; else all-gather to [s, b, v].

    Returns:
        [s, b, v/tp] (or [s, b, v]).
    """
    if sequence_parallel and parallel_state.get_tensor_model_parallel_world_size() > 1:
        hidden = tensor_parallel.gather_from_sequence_parallel_region(hidden)
    else:
        hidden = tensor_parallel.copy_to_tensor_model_parallel_region(hidden)
    logits = F.linear(hidden, word_embeddings_weight)
    if parallel_output:
        return logits
    return tensor_parallel.gather_from_tensor_model_parallel_region(logits)
