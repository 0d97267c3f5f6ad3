"""Our GPT as a scorer of token sequences, from a checkpoint of any TP/PP layout.

Single process: the checkpoint is merged into one model. Under ``torchrun`` with
``--tensor-model-parallel-size T --pipeline-model-parallel-size P`` (world size ``T x P``)
every rank merges the checkpoint, keeps its own (tp, pp) part, and the forward pass runs
as a pipeline: stage 0 embeds, each stage sends its ``[s, b, h]`` activation on, the last
stage (its TP ranks all-gather the vocabulary) computes the log-probabilities and
broadcasts them to every stage, so every rank returns the same scores.
"""
from __future__ import annotations

from argparse import Namespace
from dataclasses import dataclass

import torch
import torch.distributed as dist

from megatron.core import parallel_state
from megatron.core.distributed import checkpoint_layout
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


def _tokenizer(args: dict, flags: TokenizerFlags):
    from megatron.initialize import NullTokenizer
    from megatron.tokenizer import build_tokenizer
    kind = flags.tokenizer_type or args.get("tokenizer_type")
    if kind in (None, "NullTokenizer"):
        return NullTokenizer(int(args.get("vocab_size") or args["orig_vocab_size"]))
    return build_tokenizer(kind, vocab_file=flags.vocab_file or args.get("vocab_file"),
                           merge_file=flags.merge_file or args.get("merge_file"),
                           tokenizer_model=flags.tokenizer_model or args.get("tokenizer_model"),
                           vocab_extra_ids=int(args.get("vocab_extra_ids") or 0))


def _global_specs(model) -> dict[str, checkpoint_layout.ParamSpec]:
    """This stage's split specs under whole-model names (global layer ids; the last
    stage's tied embedding copy splits like the first stage's table)."""
    specs = {}
    layers = model.transformer.layers
    for name, spec in checkpoint_layout.param_specs(model).items():
        if name.startswith("transformer.layers."):
            local, rest = name[len("transformer.layers."):].split(".", 1)
            name = f"transformer.layers.{layers[int(local)].layer_id}.{rest}"
        if name == checkpoint_layout.TIED_COPY_KEY:
            name = checkpoint_layout.WORD_EMBEDDING_KEY
        specs[name] = spec
    return specs


def rank_state_dict(full: dict[str, torch.Tensor], model: torch.nn.Module, num_layers: int,
                    tied_embeddings: bool) -> dict[str, torch.Tensor]:
    """This process's (tp, pp) part of a whole-model state dict, under the stage-local names
    of ``model`` (this rank's stage)."""
    tp = parallel_state.get_tensor_model_parallel_world_size()
    pp = parallel_state.get_pipeline_model_parallel_world_size()
    parts = checkpoint_layout.split_state_dict(full, _global_specs(model), tp, pp, num_layers,
                                               tied_embeddings)
    return parts[(parallel_state.get_tensor_model_parallel_rank(),
                  parallel_state.get_pipeline_model_parallel_rank())]


def load_eval_model(load_dir: str, iteration: int | None = None,
                    tokenizer_flags: TokenizerFlags = TokenizerFlags()) -> EvalModel:
    """Load a GPT checkpoint of any layout for this process's (tp, pp) rank."""
    from megatron.arguments import transformer_config_from_args
    from megatron.model.gpt_model import GPTModel
    from tools.checkpoint_util import load_whole, target_vocab_rows
    _, _, args, full = load_whole(load_dir, iteration)
    if args.get("model_type") == "bert":
        raise ValueError(f"{load_dir} is a BERT checkpoint; the harness scores GPT models")
    tp = parallel_state.get_tensor_model_parallel_world_size()
    rows = full[checkpoint_layout.WORD_EMBEDDING_KEY].shape[0]
    new_rows = target_vocab_rows(args, rows, tp, None)
    checkpoint_layout.resize_vocab(full, rows, new_rows)
    config = transformer_config_from_args(Namespace(**{
        **args, "padded_vocab_size": new_rows, "hidden_dropout": 0.0, "attention_dropout": 0.0,
        "sequence_parallel": False, "recompute_granularity": None, "recompute_method": None,
        "recompute_num_layers": None, "use_cpu_initialization": True,
        "params_dtype": torch.float32}))
    model = GPTModel(config, pre_process=parallel_state.is_pipeline_first_stage(),
                     post_process=parallel_state.is_pipeline_last_stage(),
                     parallel_output=False)
    model.load_state_dict(rank_state_dict(
        full, model, int(args["num_layers"]),
        not args.get("untie_embeddings_and_output_weights", False)), strict=True)
    if torch.cuda.is_available():
        model = model.to(torch.cuda.current_device())
    vocab = int(args.get("orig_vocab_size") or args.get("vocab_size") or rows)
    return EvalModel(model, _tokenizer(args, tokenizer_flags), vocab,
                     int(args["max_position_embeddings"]), int(args["hidden_size"]))
