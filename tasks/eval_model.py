"""Our GPT as a scorer of token sequences, from a checkpoint of any TP/PP layout.

Single process: the checkpoint is merged into one model. Under ``torchrun`` with
``--tensor-model-parallel-size T --pipeline-model-parallel-size P`` (world size ``T x P``)
every rank merges the checkpoint, keeps its own (tp, pp) part
(``megatron.checkpointing.whole_model.load_model``), and the forward pass runs
as a pipeline: stage 0 embeds, each stage sends its ``[s, b, h]`` activation on, the last
stage (its TP ranks all-gather the vocabulary) computes the log-probabilities and
broadcasts them to every stage, so every rank returns the same scores.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from megatron.run_config import TokenizerConfig
from megatron.checkpointing.model_split import WORD_EMBEDDING_KEY
from megatron.checkpointing.whole_model import load_model
from megatron.core import parallel_state
from megatron.core.pipeline_parallel import p2p_communication as p2p


@dataclass(frozen=True)
class TokenizerFlags:
    """Overrides of the checkpoint's tokenizer flags (saved paths may be relative)."""

    tokenizer_type: str | None = None
    vocab_file: str | None = None
    merge_file: str | None = None
    tokenizer_model: str | None = None


class EvalModel:
    """Scores token sequences with our GPT (eval mode: no dropout, no token dropping).

    Args:
        model: this rank's stage of the GPTModel (``parallel_output=False``).
        tokenizer: the run's tokenizer (``tokenize``, ``detokenize``, ``eod``).
        vocab_size: the real vocabulary size; padded rows are never scored.
        max_length: the longest sequence the model takes (its max positions).
    """

    def __init__(self, model: torch.nn.Module, tokenizer, vocab_size: int,
                 max_length: int, hidden_size: int) -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        self.device = next(model.parameters()).device
        self.vocab_size, self.max_length, self.hidden_size = vocab_size, max_length, hidden_size

    @torch.no_grad()
    def log_probs(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` [b, s] long -> log-softmax over the real vocabulary [b, s, V] fp32.

        Every rank must call it with the same tokens (a collective under TP/PP).
        """
        b, s = tokens.shape
        if s > self.max_length:
            raise ValueError(f"{s} tokens exceed the model's {self.max_length} positions")
        tokens = tokens.to(self.device)
        positions = torch.arange(s, device=self.device).expand(b, s)
        shape = (s, b, self.hidden_size)
        if not parallel_state.is_pipeline_first_stage():
            self.model.set_input_tensor(p2p.recv_forward(shape))
        out = self.model(tokens, positions, None)
        if not parallel_state.is_pipeline_last_stage():
            p2p.send_forward(out, shape)
            result = torch.empty(b, s, self.vocab_size, device=self.device)
        else:
            result = torch.log_softmax(out[..., :self.vocab_size].float(), dim=-1)
        if parallel_state.get_pipeline_model_parallel_world_size() > 1:
            dist.broadcast(result, parallel_state.get_pipeline_model_parallel_last_rank(),
                           group=parallel_state.get_pipeline_model_parallel_group())
        return result.cpu()


def _tokenizer(saved: TokenizerConfig, flags: TokenizerFlags):
    """The tokenizer the flags name, else the one the checkpoint's run trained with."""
    from megatron.initialize import NullTokenizer
    from megatron.tokenizer import build_tokenizer
    kind = flags.tokenizer_type or saved.tokenizer_type
    if kind in (None, "NullTokenizer"):
        return NullTokenizer(int(saved.vocab_size or saved.orig_vocab_size))
    return build_tokenizer(kind, vocab_file=flags.vocab_file or saved.vocab_file,
                           merge_file=flags.merge_file or saved.merge_file,
                           tokenizer_model=flags.tokenizer_model or saved.tokenizer_model,
                           vocab_extra_ids=int(saved.vocab_extra_ids or 0))


def load_eval_model(load_dir: str, iteration: int | None = None,
                    tokenizer_flags: TokenizerFlags = TokenizerFlags()) -> EvalModel:
    """Load a GPT checkpoint of any layout for this process's (tp, pp) rank."""
    loaded = load_model(load_dir, iteration, parallel_output=False, params_dtype=torch.float32)
    config = loaded.config
    if config.model_type == "bert":
        raise ValueError(f"{load_dir} is a BERT checkpoint; the harness scores GPT models")
    rows = loaded.state_dict[WORD_EMBEDDING_KEY].shape[0]
    vocab = int(config.tokenizer.orig_vocab_size or config.tokenizer.vocab_size or rows)
    return EvalModel(loaded.model, _tokenizer(config.tokenizer, tokenizer_flags), vocab,
                     config.model.max_position_embeddings, config.model.hidden_size)
