"""BertModel: bidirectional pre-LN encoder, masked-LM head (tied) and optional NSP head."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from megatron.core import parallel_state, tensor_parallel
from megatron.core.tensor_parallel.layers import init_scope, init_whole_weight
from megatron.model.config import TransformerConfig
from megatron.model.language_model import Embedding, parallel_lm_logits
from megatron.model.module import MegatronModule
from megatron.model.norms import build_norm
from megatron.model.transformer import ParallelTransformer


def bert_extended_attention_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Padding mask [b, s] (1 = keep) -> bool [b, 1, s, s], True = masked.

    A pair is masked when either the query or the key is padding (Megatron's rule).
    """
    keep = attention_mask.bool()
    both = keep.unsqueeze(1) & keep.unsqueeze(2)  # [b, s_q, s_k]
    return (~both).unsqueeze(1)


def bert_encode(embedding: Embedding | None, transformer: ParallelTransformer,
                input_ids: torch.Tensor, attention_mask: torch.Tensor,
                tokentype_ids: torch.Tensor | None, token_drop_plan=None) -> torch.Tensor:
    """This stage's encoder: the embeddings (first stage, ``embedding`` not None) and the
    layers under the padding mask; ``input_ids`` / ``attention_mask`` [b, s] ->
    hidden [s, b, h]."""
    mask = bert_extended_attention_mask(attention_mask)
    hidden = None
    if embedding is not None:
        b, s = input_ids.shape
        position_ids = torch.arange(s, device=input_ids.device).expand(b, s)
        hidden = embedding(input_ids, position_ids, tokentype_ids)
    return transformer(hidden, mask, None, token_drop_plan)


def replicated_linear(config: TransformerConfig, n_in: int, n_out: int,
                       sees_split_sequence: bool) -> nn.Linear:
    """A small replicated layer, keyed (use_cpu_initialization) or from the default RNG:
    equal on all TP ranks either way.

    ``sees_split_sequence``: it runs on this rank's part of the sequence under
    --sequence-parallel, so its grads must be summed over the tensor-parallel group.
    """
    layer = nn.Linear(n_in, n_out, dtype=config.params_dtype)
    with torch.no_grad():
        layer.weight.copy_(init_whole_weight((n_out, n_in), config.init_method,
                                             keyed=config.use_cpu_initialization))
        layer.bias.zero_()
    for p in layer.parameters():
        p.sequence_parallel = config.sequence_parallel and sees_split_sequence
    return layer


def pool_first_token(hidden: torch.Tensor, pooler: nn.Linear,
                     sequence_parallel: bool) -> torch.Tensor:
    """Megatron's pooler: ``tanh(pooler(h[CLS]))``, hidden [s, b, h] -> [b, h].

    Under --sequence-parallel the [CLS] row lives on TP rank 0 only, so the sequence is
    gathered first; the pooled output is then the same on every TP rank.
    """
    if sequence_parallel and parallel_state.get_tensor_model_parallel_world_size() > 1:
        hidden = tensor_parallel.gather_from_sequence_parallel_region(
            hidden, tensor_parallel_output_grad=False)
    return torch.tanh(pooler(hidden[0]))


class BertLMHead(nn.Module):
    """dense -> tanh GeLU -> norm -> logits against the tied embedding + vocab-split bias."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        tp = parallel_state.get_tensor_model_parallel_world_size()
        self.config = config
        self.dense = replicated_linear(config, config.hidden_size, config.hidden_size,
                                        sees_split_sequence=True)
        self.layernorm = build_norm(config)
        self.bias = nn.Parameter(torch.zeros(config.padded_vocab_size // tp,
                                             dtype=config.params_dtype))
        tensor_parallel.set_tensor_model_parallel_attributes(self.bias, True, 0, 1)

    def forward(self, hidden: torch.Tensor, word_embeddings_weight: torch.Tensor) -> torch.Tensor:
        """[s, b, h] -> logits [s, b, v/tp]."""
        # the tanh GeLU of the MLP (Megatron uses erf here): one activation for the whole
        # model, so it is exactly transformers' MegatronBert (one hidden_act)
        hidden = self.layernorm(F.gelu(self.dense(hidden), approximate="tanh"))
        logits = parallel_lm_logits(hidden, word_embeddings_weight, True,
                                    self.config.sequence_parallel)
        return logits + self.bias


class BertModel(MegatronModule):
    """BERT pretraining model.

    Args:
        config: the model config (``position_embedding_type`` learned_absolute).
        num_tokentypes: segment vocabulary (2 for sentence A/B; 0 for none).
        add_binary_head: add the pooler + next-sentence (binary) head.
        parallel_output: keep logits split over the vocabulary (no labels case).
        pre_process / post_process: pipeline-stage ends, as in GPTModel.
    """

    def __init__(self, config: TransformerConfig, num_tokentypes: int = 2,
                 add_binary_head: bool = True, parallel_output: bool = True,
                 pre_process: bool = True, post_process: bool = True) -> None:
        super().__init__()
        if config.position_embedding_type != "learned_absolute":
            raise ValueError("BertModel supports --position-embedding-type learned_absolute only")
        if config.untie_embeddings_and_output_weights:
            raise ValueError("BertModel always ties its output layer to the word embedding; "
                             "drop --untie-embeddings-and-output-weights")
        self.config = config
        self.pre_process, self.post_process = pre_process, post_process
        self.parallel_output = parallel_output
        self.embedding = Embedding(config, num_tokentypes) if pre_process else None
        self.transformer = ParallelTransformer(config, pre_process, post_process)
        self.lm_head = self.pooler = self.binary_head = None
        if post_process:
            with init_scope("heads"):  # keyed like the layers: any stage builds the same
                self.lm_head = BertLMHead(config)
                if add_binary_head:
                    # both see the gathered [CLS] row: full grads on every rank
                    self.pooler = replicated_linear(config, config.hidden_size,
                                                     config.hidden_size,
                                                     sees_split_sequence=False)
                    self.binary_head = replicated_linear(config, config.hidden_size, 2,
                                                          sees_split_sequence=False)
        self.setup_output_embedding()

    def set_input_tensor(self, input_tensor) -> None:
        if isinstance(input_tensor, (list, tuple)):
            input_tensor = input_tensor[0] if input_tensor else None
        self.transformer.set_input_tensor(input_tensor)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                tokentype_ids: torch.Tensor | None = None, lm_labels: torch.Tensor | None = None,
                token_drop_plan=None):
        """Run this stage.

        Args:
            input_ids: [b, s] long.
            attention_mask: [b, s] padding mask, 1 = real token.
            tokentype_ids: [b, s] long segment ids, or None.
            lm_labels: [b, s] long; given, the per-token MLM loss is returned.
            token_drop_plan: random-LTD plan, or None.

        Returns:
            (lm_loss [b, s] fp32 or logits [b, s, v/tp], binary_logits [b, 2] or None) on
            the last stage; hidden [s, b, h] elsewhere.
        """
        hidden = bert_encode(self.embedding, self.transformer, input_ids, attention_mask,
                             tokentype_ids, token_drop_plan)
        if not self.post_process:
            return hidden
        return self._heads(hidden, lm_labels)

    def _heads(self, hidden: torch.Tensor, lm_labels: torch.Tensor | None):
        logits = self.lm_head(hidden, self.shared_embedding_weight())  # [s, b, v/tp]
        binary_logits = None
        if self.binary_head is not None:
            pooled = pool_first_token(hidden, self.pooler, self.config.sequence_parallel)
            binary_logits = self.binary_head(pooled).float()
        if lm_labels is None:
            logits = tensor_parallel.mask_padded_vocab(logits, self.config.vocab_size)
            if not self.parallel_output:
                logits = tensor_parallel.gather_from_tensor_model_parallel_region(logits)
            return logits.transpose(0, 1).contiguous(), binary_logits
        loss = tensor_parallel.vocab_parallel_cross_entropy(
            logits.float(), lm_labels.transpose(0, 1), self.config.vocab_size)
        return loss.transpose(0, 1).contiguous(), binary_logits
