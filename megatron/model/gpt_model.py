"""GPTModel: embedding -> transformer -> logits / per-token loss, pipeline-stage aware."""
from __future__ import annotations

import torch

from megatron.core import parallel_state, tensor_parallel
from megatron.core.tensor_parallel.layers import init_scope
from megatron.model.config import TransformerConfig
from megatron.model.language_model import Embedding, parallel_lm_logits
from megatron.model.module import MegatronModule
from megatron.model.rotary import RotaryEmbedding
from megatron.model.transformer import ParallelTransformer


class GPTModel(MegatronModule):
    """Decoder-only language model (docs/CONTRACTS.md).

    Args:
        config: the model config.
        pre_process: this stage holds the input embedding (first pipeline stage).
        post_process: this stage computes logits/loss (last pipeline stage).
        parallel_output: keep logits split over the vocabulary (no labels case).
    """

    def __init__(self, config: TransformerConfig, pre_process: bool = True,
                 post_process: bool = True, parallel_output: bool = True) -> None:
        super().__init__()
        self.config = config
        self.pre_process, self.post_process = pre_process, post_process
        self.parallel_output = parallel_output
        self.embedding = Embedding(config) if pre_process else None
        self.rotary_pos_emb = None
        if config.position_embedding_type == "rope":
            rot_dim = int(config.kv_channels * config.rotary_percent)
            self.rotary_pos_emb = RotaryEmbedding(
                rot_dim, config.rotary_base,
                config.rope_scaling_factor if config.rope_scaling else None)
        self.transformer = ParallelTransformer(config, pre_process, post_process)
        self.output_layer = None
        if post_process and config.untie_embeddings_and_output_weights:
            with init_scope("output_layer"):
                self.output_layer = tensor_parallel.ColumnParallelLinear(
                    config.hidden_size, config.padded_vocab_size, config=config,
                    init_method=config.init_method, bias=False)
        self.setup_output_embedding()

    def set_input_tensor(self, input_tensor) -> None:
        """Activation from the previous pipeline stage; lists of one tensor are accepted."""
        if isinstance(input_tensor, (list, tuple)):
            input_tensor = input_tensor[0] if input_tensor else None
        self.transformer.set_input_tensor(input_tensor)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None,
                attention_mask: torch.Tensor | None, labels: torch.Tensor | None = None,
                token_drop_plan=None) -> torch.Tensor:
        """Run this stage.

        Args:
            input_ids: [b, s] long (used on the first stage).
            position_ids: [b, s] long (embeddings and rope); None means 0..s-1.
            attention_mask: None (causal) or bool [b|1, 1, s, s], True = masked.
            labels: [b, s] long; given on the last stage, the loss is returned.
            token_drop_plan: random-LTD plan for this micro-batch, or None.

        Returns:
            loss [b, s] fp32 if labels and post_process; logits [b, s, v/tp] if
            post_process without labels; else hidden [s, b, h].
        """
        hidden = self.embedding(input_ids, position_ids) if self.pre_process else None
        rope = None
        if self.rotary_pos_emb is not None:
            if position_ids is None:
                position_ids = self._default_position_ids(input_ids)
            rope = self.rotary_pos_emb(position_ids)  # [s, b, 1, d]
        hidden = self.transformer(hidden, attention_mask, rope, token_drop_plan)
        if not self.post_process:
            return hidden
        return self._postprocess(hidden, labels)

    def _default_position_ids(self, input_ids: torch.Tensor | None) -> torch.Tensor:
        """0..s-1 for every row, sized from the tokens or the received activation."""
        if input_ids is not None:
            (b, s), device = input_ids.shape, input_ids.device
        else:
            received = self.transformer.input_tensor  # [s(/tp), b, h]
            s, b, device = received.shape[0], received.shape[1], received.device
            if self.config.sequence_parallel:
                s *= parallel_state.get_tensor_model_parallel_world_size()
        return torch.arange(s, device=device).expand(b, s)

    def _postprocess(self, hidden: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.output_layer is not None:
            weight = self.output_layer.weight
        else:
            weight = self.shared_embedding_weight()
        # the loss needs the vocab split kept; only bare logits may be gathered
        logits = parallel_lm_logits(hidden, weight, True, self.config.sequence_parallel)
        if labels is None:
            logits = tensor_parallel.mask_padded_vocab(logits, self.config.vocab_size)
            if not self.parallel_output:
                logits = tensor_parallel.gather_from_tensor_model_parallel_region(logits)
            return logits.transpose(0, 1).contiguous()  # [b, s, v/tp] (or [b, s, v])
        loss = tensor_parallel.vocab_parallel_cross_entropy(
            logits.float(), labels.transpose(0, 1), self.config.vocab_size)
        return loss.transpose(0, 1).contiguous()  # [b, s]
