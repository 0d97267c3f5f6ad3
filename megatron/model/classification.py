"""Classification: a BERT encoder with a pooler, dropout and a linear head (Megatron's
``Classification`` and, with ``num_choices``, its ``MultipleChoice``).

The encoder's parameters have ``BertModel``'s names (``embedding.*``, ``transformer.*``,
``pooler.*``), so a pretrained BERT's state dict, without its ``lm_head.*`` and
``binary_head.*``, loads into it; ``classification_head.*`` is new.
"""
from __future__ import annotations

import torch
from torch import nn

from megatron.core.tensor_parallel.layers import init_scope
from megatron.model.bert_model import bert_encode, pool_first_token, replicated_linear
from megatron.model.config import TransformerConfig
from megatron.model.language_model import Embedding
from megatron.model.transformer import ParallelTransformer


class Classification(nn.Module):
    """BERT encoder -> tanh pooler on [CLS] -> dropout -> linear to ``num_classes``.

    Args:
        config: the encoder's config (``learned_absolute`` positions).
        num_classes: outputs of the head (1 for a regression such as STS-B, or for the
            per-choice score of a multiple-choice task).
        num_tokentypes: segment vocabulary (2: sentence A / B).
        num_choices: multiple choice: the input rows are ``[b * num_choices]`` (each
            choice one row, the choices of a question consecutive) and the logits are
            returned as ``[b, num_choices]``; needs ``num_classes == 1``.
        pre_process / post_process: pipeline-stage ends, as in ``BertModel``.
    """

    def __init__(self, config: TransformerConfig, num_classes: int, num_tokentypes: int = 2,
                 num_choices: int | None = None, pre_process: bool = True,
                 post_process: bool = True) -> None:
        super().__init__()
        if config.position_embedding_type != "learned_absolute":
            raise ValueError("Classification supports --position-embedding-type "
                             "learned_absolute only (BERT)")
        if num_choices is not None and num_classes != 1:
            raise ValueError(f"multiple choice scores each choice with one output, got "
                             f"num_classes {num_classes}")
        self.config, self.num_classes, self.num_choices = config, num_classes, num_choices
        self.pre_process, self.post_process = pre_process, post_process
        self.embedding = Embedding(config, num_tokentypes) if pre_process else None
        self.transformer = ParallelTransformer(config, pre_process, post_process)
        self.pooler = self.classification_dropout = self.classification_head = None
        if post_process:
            with init_scope("classification"):   # keyed: the same under any layout
                self.pooler = replicated_linear(config, config.hidden_size,
                                                config.hidden_size, sees_split_sequence=False)
                self.classification_head = replicated_linear(
                    config, config.hidden_size, num_classes, sees_split_sequence=False)
            self.classification_dropout = nn.Dropout(config.hidden_dropout)

    def set_input_tensor(self, input_tensor) -> None:
        if isinstance(input_tensor, (list, tuple)):
            input_tensor = input_tensor[0] if input_tensor else None
        self.transformer.set_input_tensor(input_tensor)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                tokentype_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Run this stage.

        Args:
            input_ids: [b, s] long (``[b * num_choices, s]`` for multiple choice).
            attention_mask: [b, s] padding mask, 1 = real token.
            tokentype_ids: [b, s] long segment ids, or None.

        Returns:
            logits [b, num_classes] (``[b, num_choices]``) on the last stage; hidden
            [s, b, h] elsewhere.
        """
        hidden = bert_encode(self.embedding, self.transformer, input_ids, attention_mask,
                             tokentype_ids)
        if not self.post_process:
            return hidden
        pooled = pool_first_token(hidden, self.pooler, self.config.sequence_parallel)
        logits = self.classification_head(self.classification_dropout(pooled))
        if self.num_choices is not None:
            logits = logits.view(-1, self.num_choices)
        return logits
