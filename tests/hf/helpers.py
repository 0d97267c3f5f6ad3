"""Tiny models of ours saved as real checkpoints, for the Hugging Face interop tests.

Models are made here (random init), never downloaded; HF_HUB_OFFLINE is set so nothing
in transformers / lm-eval tries the network.
"""
from __future__ import annotations

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from megatron.checkpointing import save_checkpoint  # noqa: E402
from megatron.hf.architecture import imported_run_config  # noqa: E402
from megatron.run_config import RunConfig  # noqa: E402
from tests.tools.tool_loader import load_tool  # noqa: E402

VOCAB = 50            # real vocabulary; padded to 56 (TP1) / 64 (TP2) with divisible-by 8
LAYERS, HIDDEN, HEADS, SEQ = 4, 32, 4, 16

KINDS = {
    "gpt_learned": dict(position_embedding_type="learned_absolute"),
    "gpt_rope": dict(position_embedding_type="rope"),
    "gpt_rope_untied": dict(position_embedding_type="rope",
                            untie_embeddings_and_output_weights=True),
    "bert": dict(model_type="bert", bert_binary_head=True),
    # Llama: RMSNorm, 4 heads in 2 query groups, SwiGLU, no biases, Llama-3 scaled rotary
    "llama": dict(normalization="RMSNorm", group_query_attention=True, num_query_groups=2,
                  swiglu=True, add_bias_linear=False, position_embedding_type="rope",
                  add_position_embedding=False, rotary_base=500000.0, use_rope_scaling=True,
                  rope_scaling_factor=8.0, untie_embeddings_and_output_weights=True),
    # and with biases, tied embeddings, one key/value head per query head, no scaling
    "llama_bias_tied": dict(normalization="RMSNorm", swiglu=True,
                            position_embedding_type="rope", add_position_embedding=False),
}


def checkpoint_util():
    return load_tool("checkpoint_util")


def run_args(kind: str, **over) -> dict:
    """The flags of a tiny run of ``kind`` (TP1/PP1)."""
    ours = dict(num_layers=LAYERS, hidden_size=HIDDEN, num_attention_heads=HEADS,
                ffn_hidden_size=4 * HIDDEN, kv_channels=HIDDEN // HEADS,   # as validated
                seq_length=SEQ, max_position_embeddings=SEQ, hidden_dropout=0.0,
                attention_dropout=0.0, make_vocab_size_divisible_by=8,
                tokenizer_type="NullTokenizer", vocab_size=VOCAB, orig_vocab_size=VOCAB,
                padded_vocab_size=56, tensor_model_parallel_size=1,
                pipeline_model_parallel_size=1, virtual_pipeline_model_parallel_size=None)
    return {**ours, **KINDS[kind], **over}


def as_config(run: dict | RunConfig) -> RunConfig:
    """A run's config: ``run`` itself, or built from its flags (fp32, built whole)."""
    return run if isinstance(run, RunConfig) else imported_run_config(run)


def build_model(run: dict | RunConfig) -> torch.nn.Module:
    config = as_config(run)
    if config.model_type == "bert":
        from megatron.model.bert_model import BertModel
        binary = config.extra["bert_binary_head"]
        return BertModel(config.model, num_tokentypes=2 if binary else 0,
                         add_binary_head=binary)
    from megatron.model.gpt_model import GPTModel
    return GPTModel(config.model)


def save_tiny(kind: str, folder: str, seed: int = 3, **over) -> tuple[torch.nn.Module, dict]:
    """A randomly initialised tiny model saved at iteration 5 (TP1/PP1) under ``folder``.

    Every weight, the padded vocabulary rows and LayerNorm/bias included, is random, so a
    mapping that drops, swaps or transposes anything shows in the logits.
    """
    torch.manual_seed(seed)
    args = run_args(kind, **over)
    model = build_model(args)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    save_checkpoint(5, [model], None, None, {"iteration": 5}, save_dir=folder,
                    run_config=as_config(args))
    return model.eval(), args


def our_logits(model: torch.nn.Module, tokens: torch.Tensor, args: dict) -> torch.Tensor:
    """[b, s] -> logits [b, s, v] (real vocabulary) of our model; BERT: (mlm, binary)."""
    with torch.no_grad():
        if args.get("model_type") == "bert":
            types = torch.zeros_like(tokens) if args["bert_binary_head"] else None
            if types is not None:
                types[:, tokens.shape[1] // 2:] = 1
            mlm, binary = model(tokens, torch.ones_like(tokens), types)
            return mlm[..., :VOCAB], binary
        b, s = tokens.shape
        return model(tokens, torch.arange(s).expand(b, s), None)[..., :VOCAB], None


WORDS = ("the cat sat on a mat and the dog ran to the park while birds sang in old trees "
         "red blue green small big fast slow happy sad one two three four five").split()


def corpus(n: int, seed: int = 0) -> list[str]:
    """``n`` short sentences over a small word list (deterministic)."""
    g = torch.Generator().manual_seed(seed)
    lines = []
    for _ in range(n):
        length = int(torch.randint(5, 12, (1,), generator=g))
        idx = torch.randint(0, len(WORDS), (length,), generator=g)
        lines.append(" ".join(WORDS[i] for i in idx.tolist()) + ".")
    return lines


def make_bpe(folder: str, vocab_size: int = 300) -> tuple[str, str]:
    """A byte-level BPE (GPT-2 format: vocab.json + merges.txt, with <|endoftext|>) trained
    with the ``tokenizers`` package on :func:`corpus`; returns the two paths."""
    from tokenizers import ByteLevelBPETokenizer
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(corpus(400), vocab_size=vocab_size, min_frequency=2,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    os.makedirs(folder, exist_ok=True)
    tok.save_model(folder)
    return os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")


def make_tiny_gpt2(folder: str, positions: int = 64, seed: int = 0) -> str:
    """A randomly initialised tiny ``GPT2LMHeadModel`` directory with a BPE tokenizer
    (vocab.json, merges.txt), as a downloaded GPT-2 would look (no download)."""
    import shutil

    import transformers
    vocab_file, merge_file = make_bpe(os.path.join(folder, "_tok"))
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=300, n_positions=positions, n_embd=HIDDEN,
                                     n_layer=LAYERS, n_head=HEADS, bos_token_id=0,
                                     eos_token_id=0)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    for path in (vocab_file, merge_file):
        shutil.copy(path, folder)
    shutil.rmtree(os.path.join(folder, "_tok"))
    return folder
